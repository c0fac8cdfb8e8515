"""Settings for the ASGI server tests: testproject's, on PostgreSQL, with
``CONN_MAX_AGE = 600`` and an ``application_name`` of the test's choosing, by
which the test counts the server's sessions."""

import os

from tests.process_settings import *  # noqa: F403
from tests.process_settings import DATABASES

DATABASES["default"]["OPTIONS"] = {
    "application_name": os.environ["TESTPROJECT_APPLICATION_NAME"]
}
