"""Tasks for the process tests: one that holds its worker until released."""

from __future__ import annotations

import threading

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]

#: Set by the task once it runs; it then waits for ``release``.
holding = threading.Event()
release = threading.Event()


@task(queue_name="solo")
def hold() -> None:
    holding.set()
    release.wait(10)


#: Ends the chain of ``again`` tasks.
stop = threading.Event()


@task
def again() -> None:
    """Enqueue itself until ``stop``: a worker is always busy, as at any fork."""
    from testproject.jobs.background import database_session

    if chains_use_the_database():
        database_session()  # the worker holds a connection at the fork
    if not stop.is_set():
        again.enqueue()


def chains_use_the_database() -> bool:
    """Whether the busy chains of the fork tests query while the process forks.

    Not on SQLite: its library's own mutexes (the memory allocator's, the
    one ``sqlite3_open`` takes) are not fork-safe, so a child forked while a
    parent thread is inside any SQLite call may hang in its first SQLite
    call, whatever pool runs it (SQLite's documentation: do not carry SQLite
    across fork() with threads). The SQLite children still use the pool,
    and SQLite, themselves.
    """
    from django.db import connection

    return connection.vendor != "sqlite"


#: Set by ``slow`` once it runs.
slow_started = threading.Event()


@task
def slow(name: str) -> None:
    """Write a row after half a second: long enough to be seen pending."""
    import time

    from testproject.jobs.models import Record

    slow_started.set()
    time.sleep(0.5)
    Record.objects.create(name=name)
