"""testproject's WSGI application, with both pools warmed as it loads.

Under ``gunicorn --preload`` this module is imported in the master, so the
master's pool workers hold a database session each when gunicorn forks its
workers. The sessions are printed for the test to follow.
"""

import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.process_settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

from testproject.jobs import background  # noqa: E402
from testproject.jobs.tasks import record  # noqa: E402


def _warm() -> list[int]:
    executor_session = background.executor.submit(
        background.record, "master-warm"
    ).result(10)
    result = record.enqueue("master-warm")
    deadline = time.monotonic() + 10
    while not result.is_finished and time.monotonic() < deadline:
        time.sleep(0.005)
        result.refresh()
    return [executor_session, result.return_value]


print(json.dumps({"master": os.getpid(), "sessions": _warm()}), flush=True)
