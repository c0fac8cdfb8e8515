"""Settings for tests that run testproject in processes of their own.

testproject's settings, on the database named by
``TESTPROJECT_DATABASE_URL``, with connections kept between units (so that
workers hold one when a process forks) and the Tasks backend configured.
"""

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = 600
TASKS = {
    "default": {
        "BACKEND": "django_thread.tasks.ThreadPoolBackend",
        "QUEUES": ["default", "solo"],
        # "solo" has one worker, so that a test knows which one runs what.
        "OPTIONS": {"WORKERS": 2, "QUEUE_WORKERS": {"solo": 1}},
    }
}
