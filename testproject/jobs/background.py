"""Background work that the ``record`` view hands off, and what it reports back.

A module-level executor, as projects write it; under ``gunicorn --preload``
it is created (and may be used) in the master, before the workers fork.
"""

from __future__ import annotations

from django.db import connections

from django_thread import ThreadPoolExecutor
from testproject.jobs.models import Record

executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jobs")


def database_session(alias: str = "default") -> int:
    """The server's id for this thread's connection (pg_stat_activity's pid).

    SQLite has no server: the id of the driver's connection object stands in.
    """
    connection = connections[alias]
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return id(connection.connection)
    query = (
        "SELECT pg_backend_pid()"
        if connection.vendor == "postgresql"
        else "SELECT CONNECTION_ID()"
    )
    with connection.cursor() as cursor:
        cursor.execute(query)
        return int(cursor.fetchone()[0])


def record(name: str) -> int:
    """Write one row; return the database session that wrote it."""
    Record.objects.create(name=name)
    return database_session()
