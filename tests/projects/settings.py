"""A project whose test suite uses a module-level pool and the Tasks backend.

``PROJECT_DATABASE`` is ``memory`` (SQLite's in-memory test database) or a
PostgreSQL URL; on PostgreSQL connections persist (``CONN_MAX_AGE``), so an
idle worker keeps one, as in production.
"""

import os

from testproject.databases import database_from_url
from testproject.settings import *  # noqa: F403
from testproject.settings import INSTALLED_APPS

_database = os.environ.get("PROJECT_DATABASE", "memory")

if _database == "memory":
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    }
else:
    DATABASES = {
        "default": database_from_url(
            _database,
            CONN_MAX_AGE=600,
            TEST={
                "NAME": os.environ.get(
                    "PROJECT_TEST_DATABASE", f"test_django_thread_project_{os.getpid()}"
                )
            },
        )
    }

try:
    import django.tasks  # noqa: F401
except ImportError:  # Django 5.2: the backport
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks"]

TASKS = {"default": {"BACKEND": "django_thread.tasks.ThreadPoolBackend"}}

TEST_RUNNER = os.environ.get(
    "PROJECT_TEST_RUNNER", "django_thread.testing.DiscoverRunner"
)
