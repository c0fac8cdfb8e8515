"""One Django configuration for every benchmark: databases, task backends.

Database aliases, so that one process compares every connection policy:

- ``default`` / ``sqlite0``: one SQLite file, ``CONN_MAX_AGE`` 600 and 0;
- ``pg`` / ``pg0``: PostgreSQL, ``CONN_MAX_AGE`` 600 and 0;
- ``pgpool``: PostgreSQL with ``CONN_MAX_AGE = 0`` and Django's native pool.

Task backends: ``threads`` (ours), ``persistent`` (ours with
``PERSISTENT_CONNECTIONS``) and ``local`` (django-tasks-local, when installed).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tempfile
from typing import Any

from testproject.databases import database_from_url

#: The pool must hold one connection per worker of the widest run.
POOL_SIZE = 16


def postgres_url(given: str | None) -> str | None:
    """The PostgreSQL server to measure, or None when none is reachable."""
    url = given or os.environ.get("DJANGO_THREAD_TEST_POSTGRES")
    if not url:
        return None
    import psycopg

    try:
        psycopg.connect(url.split("?")[0], connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL at {url} is unreachable ({exc}); SQLite only")
        return None
    return url


def tasks_local_version() -> str | None:
    """django-tasks-local's version, when it is installed and can run here."""
    if importlib.util.find_spec("django_tasks_local") is None:
        return None
    return importlib.metadata.version("django-tasks-local")


def databases(url: str | None) -> dict[str, dict[str, Any]]:
    path = os.path.join(tempfile.mkdtemp(prefix="django_thread_bench_"), "db.sqlite3")
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
    sqlite["OPTIONS"] = {"timeout": 20}
    found = {
        "default": {**sqlite, "CONN_MAX_AGE": 600},
        "sqlite0": {**sqlite, "CONN_MAX_AGE": 0},
    }
    if url:
        found["pg"] = database_from_url(url, CONN_MAX_AGE=600)
        found["pg0"] = database_from_url(url, CONN_MAX_AGE=0)
        pool = {"min_size": 1, "max_size": POOL_SIZE}
        found["pgpool"] = database_from_url(url, CONN_MAX_AGE=0, OPTIONS={"pool": pool})
    return found


def task_backends(workers: int, max_results: int) -> dict[str, dict[str, Any]]:
    import django

    package = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    ours = "django_thread.tasks.ThreadPoolBackend"
    options = {"WORKERS": workers, "MAX_RESULTS": max_results}
    backends = {
        "default": {"BACKEND": f"{package}.backends.immediate.ImmediateBackend"},
        "threads": {"BACKEND": ours, "OPTIONS": options},
        "persistent": {
            "BACKEND": ours,
            "OPTIONS": {**options, "PERSISTENT_CONNECTIONS": True},
        },
    }
    if tasks_local_version():
        backends["local"] = {
            "BACKEND": "django_tasks_local.ThreadPoolBackend",
            "OPTIONS": {"MAX_WORKERS": workers, "MAX_RESULTS": max_results},
        }
    return backends


def configure(url: str | None, task_workers: int, max_results: int) -> None:
    """Configure Django and create the one table the query jobs read."""
    import django
    from django.conf import settings

    apps = ["django_thread", "testproject.jobs"]
    if django.VERSION < (6, 0):
        apps.append("django_tasks")
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=apps,
        DATABASES=databases(url),
        TASKS=task_backends(task_workers, max_results),
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command
    from django.db import connections

    for alias in ("default", "pg") if url else ("default",):
        call_command("migrate", "jobs", database=alias, verbosity=0)
    connections.close_all()
