"""Settings for processes running DURABLE tasks (tests/durable).

testproject's settings with django-tasks-db, on the database of
``TESTPROJECT_DATABASE_URL``. ``DURABLE_BACKEND`` picks the backend of the
``default`` alias: ``durable`` (ThreadPoolBackend with DURABLE, the default)
or ``db`` (django-tasks-db's DatabaseBackend, whose rows the other runs).
``DURABLE_WORKERS``, ``DURABLE_LEASE`` and ``DURABLE_MAX_ATTEMPTS`` set the
options of the same names.
"""

import os

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
DATABASES["default"]["CONN_MAX_AGE"] = 600
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}

if os.environ.get("DURABLE_BACKEND", "durable") == "db":
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
else:
    TASKS = {
        "default": {
            "BACKEND": "django_thread.tasks.ThreadPoolBackend",
            "OPTIONS": {
                "DURABLE": True,
                "WORKERS": int(os.environ.get("DURABLE_WORKERS", "4")),
                "POLL_INTERVAL": 0.2,
                "LEASE": float(os.environ.get("DURABLE_LEASE", "3")),
                "MAX_ATTEMPTS": int(os.environ.get("DURABLE_MAX_ATTEMPTS", "3")),
            },
        }
    }

ROOT_URLCONF = "tests.durable_urls"
DJANGO_THREAD_STOP_TIMEOUT = float(os.environ.get("DURABLE_STOP_TIMEOUT", "5"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_thread": {"handlers": ["console"], "level": "INFO"}},
}
