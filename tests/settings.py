"""Test settings: testproject on three real databases at once.

``default`` is SQLite (a file, so that threads share it), ``postgres`` is the
server named by ``DJANGO_THREAD_TEST_POSTGRES`` or, when that is unset, an
embedded PostgreSQL that ``tests/conftest.py`` starts, and ``mariadb`` is
``DJANGO_THREAD_TEST_MARIADB`` (default: the local server), when its
driver, mysqlclient (the ``mariadb`` extra), is installed. Several aliases
also prove that cleanup covers every database a unit touched.
"""

import importlib.util
import os
import tempfile
from pathlib import Path

from testproject.databases import database_from_url
from testproject.settings import *  # noqa: F403
from testproject.settings import INSTALLED_APPS

# DURABLE task backends store tasks in django-tasks-db's table (tests/durable).
INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]

_sqlite_dir = Path(tempfile.gettempdir()) / f"django_thread_tests_{os.getpid()}"
_sqlite_dir.mkdir(exist_ok=True)

#: None means "start an embedded server" (see conftest).
POSTGRES_URL = os.environ.get("DJANGO_THREAD_TEST_POSTGRES") or None
MARIADB_URL = os.environ.get(
    "DJANGO_THREAD_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test"
)

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_sqlite_dir / "default.sqlite3"),
        "OPTIONS": {"timeout": 20},
        "TEST": {"NAME": str(_sqlite_dir / "test_default.sqlite3")},
    },
    "postgres": database_from_url(
        POSTGRES_URL or "postgresql://postgres@/postgres?host=/nonexistent",
        OPTIONS={"application_name": "django_thread_tests"},
        # One test database per run, so that runs on one server never collide.
        TEST={"NAME": f"test_django_thread_{os.getpid()}"},
    ),
}

# Django loads the backend of every configured alias when it sets up test
# databases, so an alias whose driver is missing would break every test; the
# MariaDB tests then skip (or fail the run under CI=true, see conftest).
if importlib.util.find_spec("MySQLdb") is not None:
    DATABASES["mariadb"] = database_from_url(
        MARIADB_URL,
        OPTIONS={"charset": "utf8mb4"},
        TEST={"NAME": f"test_django_thread_{os.getpid()}"},
    )

# README.rst's Tasks example sends mail (tests/test_readme.py). Django 6.1
# warns that sending mail without MAILERS is deprecated; the test environment
# swaps each mailer for the in-memory one. Earlier versions ignore the setting.
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
