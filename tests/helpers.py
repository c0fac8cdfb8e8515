"""What tests share besides fixtures: counting and killing server connections.

Fixtures and pytest hooks live in ``tests/conftest.py``; tests import these
helpers from here, never from a conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from django.db import connections

import django_thread
from django_thread.registry import release_connections

#: Strict mode: under CI=true an unreachable MariaDB, or any skip, fails the run.
IN_CI = os.environ.get("CI", "").lower() == "true"

#: The repository root, for tests that start a fresh interpreter on it.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: The run tests the installed wheel, from a copy of the checkout without the
#: package (tests/run_installed.py, which tox's matrix environments run).
TESTING_WHEEL = os.environ.get("DJANGO_THREAD_TEST_WHEEL") == "1"


def server_connection_count(alias: str) -> int:
    """Connections to this test database other than the test's own."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid()"
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        return cursor.fetchone()[0]


def backend_id(alias: str, *, connect: bool = True) -> Any:
    """The server's id for this thread's connection (a file handle for SQLite).

    ``connect=False`` reports a closed SQLite connection as ``id(None)``
    instead of opening a new one, whose id could repeat the old one's.
    """
    connection = connections[alias]
    if connect:
        connection.ensure_connection()
    if connection.vendor == "sqlite":
        return id(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid()"
            if connection.vendor == "postgresql"
            else "SELECT CONNECTION_ID()"
        )
        return cursor.fetchone()[0]


def kill_server_connections(alias: str) -> int:
    """Terminate, from the server side, every other connection to the test db."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "datname = current_database() AND pid <> pg_backend_pid()"
            )
            killed = len(cursor.fetchall())
        else:
            cursor.execute(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
            ids = [row[0] for row in cursor.fetchall()]
            for pid in ids:
                with contextlib.suppress(Exception):
                    cursor.execute(f"KILL {int(pid)}")
            killed = len(ids)
    wait_for(lambda: server_connection_count(alias) == 0, "killed connections to go")
    return killed


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Servers end a backend shortly after its client closes; poll briefly."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class OpenedConnections:
    """Every DB-API connection Django opened in another thread during a test.

    Recorded through Django's public ``connection_created`` signal, so it sees
    real wrappers, and tells which of them are still open: this is how SQLite,
    which has no server to ask, is checked. The ``opened_connections`` fixture
    connects one for the length of a test.
    """

    def __init__(self) -> None:
        self.wrappers: list[Any] = []
        self._lock = threading.Lock()
        self._main = threading.get_ident()

    def record(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if threading.get_ident() != self._main:
            with self._lock:
                self.wrappers.append(connection)

    def still_open(self, alias: str | None = None) -> int:
        return sum(
            1
            for wrapper in self.wrappers
            if wrapper.connection is not None
            and not wrapper.closed_in_transaction
            and (alias is None or wrapper.alias == alias)
        )

    def opened(self, alias: str | None = None) -> int:
        return sum(1 for w in self.wrappers if alias is None or w.alias == alias)


@contextlib.contextmanager
def database_settings(alias: str, **overrides: Any) -> Iterator[None]:
    """Change an alias's settings for every thread (wrappers share the dict)."""
    settings_dict = connections.settings[alias]
    saved = {key: settings_dict.get(key) for key in overrides}
    connections[alias].close()
    settings_dict.update(overrides)
    try:
        yield
    finally:
        connections[alias].close()
        settings_dict.update(saved)


@contextlib.contextmanager
def native_postgres_pool(max_size: int, timeout: float = 20) -> Iterator[Any]:
    """Django's native psycopg pool on the ``postgres`` alias; yields the pool."""
    options = dict(connections.settings["postgres"].get("OPTIONS", {}))
    options["pool"] = {"min_size": 1, "max_size": max_size, "timeout": timeout}
    with database_settings("postgres", CONN_MAX_AGE=0, OPTIONS=options):
        try:
            yield connections["postgres"].pool
        finally:
            connections["postgres"].close()  # back to the pool before closing it
            connections["postgres"].close_pool()


#: The ways a sync call reaches a django_thread pool, for tests that hold
#: each of them to the executor's guarantees.
CALLERS = ["executor", "to_thread", "sync_to_async"]

#: The name of the shared pool's threads (django_thread.async_calls).
SHARED_POOL_PREFIX = "django_thread.to_thread"


def _through_to_thread(fn: Callable[..., Any], *args: Any) -> Coroutine[Any, Any, Any]:
    return django_thread.to_thread(fn, *args)


def _through_sync_to_async(
    fn: Callable[..., Any], *args: Any
) -> Coroutine[Any, Any, Any]:
    return django_thread.sync_to_async(fn, thread_sensitive=False)(*args)


class AsyncCaller:
    """``submit()`` as an executor's, each call awaited through an async drop-in.

    The event loop runs in a thread of its own, so that a test can have
    several calls in flight at once, as it does with an executor. Each call
    checks that it really ran on the shared pool.
    """

    def __init__(self, through: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        self.through = through
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        def on_the_shared_pool(*args: Any) -> Any:
            name = threading.current_thread().name
            assert name.startswith(SHARED_POOL_PREFIX), name
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(
            self.through(on_the_shared_pool, *args), self.loop
        )

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@contextlib.contextmanager
def calls_through(caller: str, max_workers: int) -> Iterator[Any]:
    """An object whose ``submit()`` runs each call through ``caller`` (see CALLERS).

    ``max_workers`` bounds the executor; the shared pool has its own size,
    at least the executor's default. On the way out the shared pool's
    workers close their connections, so that the next test starts afresh.
    """
    if caller == "executor":
        with django_thread.ThreadPoolExecutor(max_workers=max_workers) as executor:
            yield executor
        return
    through = {"to_thread": _through_to_thread, "sync_to_async": _through_sync_to_async}
    async_caller = AsyncCaller(through[caller])
    try:
        yield async_caller
    finally:
        async_caller.close()
        release_connections()
