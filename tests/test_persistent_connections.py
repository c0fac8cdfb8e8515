"""Persistent connections on the threads django_thread owns (opt-in).

Every test runs at ``CONN_MAX_AGE = 0``, where Django would close the
connection after each unit, so that a connection kept across units can only
be the opt-in's doing. Connections are counted on the server where there is
one, and through ``connection_created`` (``opened_connections``) everywhere.
The Tasks backend's ``PERSISTENT_CONNECTIONS`` option is tested with its
other connection tests, in ``tests/tasks/test_connections.py``.
"""

from __future__ import annotations

import threading
from concurrent import futures

import pytest
from django.db import connections, transaction
from django.test import override_settings

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from testproject.jobs.models import Record
from tests.helpers import (
    database_settings,
    kill_server_connections,
    native_postgres_pool,
    server_connection_count,
    wait_for,
)

# Workers use the database outside any test-wide transaction.
pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 2

persistent = override_settings(DJANGO_THREAD_PERSISTENT_CONNECTIONS=True)


def query(alias: str) -> None:
    Record.objects.using(alias).exists()


def run_on_every_worker(executor: ThreadPoolExecutor, alias: str) -> None:
    """One query on each worker: the barrier holds each until all have one."""
    barrier = threading.Barrier(WORKERS, timeout=10)

    def query_then_wait() -> None:
        query(alias)
        barrier.wait()

    for future in [executor.submit(query_then_wait) for _ in range(WORKERS)]:
        future.result()


def test_workers_keep_exactly_max_workers_connections_across_100_units(
    alias, opened_connections
):
    with database_settings(alias, CONN_MAX_AGE=0), persistent:
        executor = ThreadPoolExecutor(max_workers=WORKERS)
        try:
            run_on_every_worker(executor, alias)
            for future in [executor.submit(query, alias) for _ in range(100)]:
                future.result()
            assert opened_connections.opened(alias) == WORKERS
            assert opened_connections.still_open(alias) == WORKERS
            if alias != "default":
                assert server_connection_count(alias) == WORKERS
        finally:
            executor.shutdown(wait=True)
        assert opened_connections.still_open() == 0
        if alias != "default":
            wait_for(
                lambda: server_connection_count(alias) == 0,
                "the workers' connections to close",
            )


@pytest.mark.parametrize(
    ("setting", "argument", "kept"),
    [
        (False, None, False),
        (True, None, True),
        (True, False, False),
        (False, True, True),
    ],
    ids=["setting-off", "setting-on", "argument-off", "argument-on"],
)
def test_executor_argument_overrides_the_setting(
    alias, opened_connections, setting, argument, kept
):
    units = 5
    with (
        database_settings(alias, CONN_MAX_AGE=0),
        override_settings(DJANGO_THREAD_PERSISTENT_CONNECTIONS=setting),
    ):
        with ThreadPoolExecutor(
            max_workers=1, persistent_connections=argument
        ) as executor:
            for _ in range(units):
                executor.submit(query, alias).result()
            assert opened_connections.still_open(alias) == (1 if kept else 0)
    assert opened_connections.opened(alias) == (1 if kept else units)
    assert opened_connections.still_open() == 0


def test_killed_connections_are_replaced_with_health_checks_on(server_alias):
    alias = server_alias
    with (
        database_settings(alias, CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=True),
        persistent,
        ThreadPoolExecutor(max_workers=WORKERS) as executor,
    ):
        run_on_every_worker(executor, alias)
        assert server_connection_count(alias) == WORKERS
        assert kill_server_connections(alias) == WORKERS
        # Every unit succeeds: the health check finds the dead connection
        # before the unit's first query and Django reconnects.
        for future in [executor.submit(query, alias) for _ in range(20)]:
            future.result()
        run_on_every_worker(executor, alias)
        assert server_connection_count(alias) == WORKERS
    wait_for(lambda: server_connection_count(alias) == 0, "workers to disconnect")


def test_leaked_transaction_and_failing_units_get_fresh_connections(
    alias, opened_connections
):
    def leak_transaction() -> None:
        transaction.atomic(using=alias).__enter__()
        query(alias)

    def fail_after_query() -> None:
        query(alias)
        raise ValueError("the job failed")

    with (
        database_settings(alias, CONN_MAX_AGE=0),
        persistent,
        ThreadPoolExecutor(max_workers=1) as executor,
    ):
        executor.submit(query, alias).result()
        executor.submit(leak_transaction).result()
        assert opened_connections.opened(alias) == 1  # the leak reused it
        executor.submit(query, alias).result()
        assert opened_connections.opened(alias) == 2  # discarded, so a fresh one
        with pytest.raises(ValueError):
            executor.submit(fail_after_query).result()
        executor.submit(query, alias).result()
        assert opened_connections.opened(alias) == 3  # closed on error
        executor.submit(query, alias).result()
        assert opened_connections.opened(alias) == 3  # and kept again
    assert opened_connections.still_open() == 0


@pytest.fixture
def postgres_pool():
    """Django's native psycopg pool on the ``postgres`` alias."""
    pytest.importorskip("psycopg_pool")
    with native_postgres_pool(max_size=WORKERS) as pool:
        yield pool


@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_an_alias_on_the_native_pool_is_left_alone(postgres_pool):
    with persistent, ThreadPoolExecutor(max_workers=WORKERS) as executor:
        run_on_every_worker(executor, "postgres")
        for future in [executor.submit(query, "postgres") for _ in range(20)]:
            future.result()
        # Every unit gave its connection back, while the workers live on.
        connections["postgres"].close()  # the test's own checkout, too
        stats = postgres_pool.get_stats()
        assert stats["pool_size"] >= 1
        assert stats["pool_size"] - stats["pool_available"] == 0


def test_unit_of_work_on_a_foreign_thread_keeps_nothing(alias, opened_connections):
    def unit_then_state() -> bool:
        with unit_of_work():
            query(alias)
        still_connected = connections[alias].connection is not None
        connections.close_all()  # whatever the assertion says, never leak
        return still_connected

    with database_settings(alias, CONN_MAX_AGE=0), persistent:
        with futures.ThreadPoolExecutor(max_workers=1) as stdlib_pool:
            assert stdlib_pool.submit(unit_then_state).result() is False
            assert stdlib_pool.submit(unit_then_state).result() is False
    assert opened_connections.opened(alias) == 2


class Poller(Thread):
    """A long-running loop, one unit of work per iteration."""

    def __init__(self, alias: str, iterations: int) -> None:
        super().__init__()
        self.alias = alias
        self.iterations = iterations
        self.connected_between_units: list[bool] = []

    def run(self) -> None:
        for _ in range(self.iterations):
            with unit_of_work():
                query(self.alias)
            self.connected_between_units.append(
                connections[self.alias].connection is not None
            )


class PersistentPoller(Poller):
    persistent_connections = True


@pytest.mark.parametrize(
    ("thread_class", "setting", "kept"),
    [
        (Poller, False, False),
        (Poller, True, True),
        (PersistentPoller, False, True),
    ],
    ids=["setting-off", "setting-on", "class-attribute-on"],
)
def test_thread_loop_keeps_its_connection_across_iterations(
    alias, opened_connections, thread_class, setting, kept
):
    iterations = 4
    with (
        database_settings(alias, CONN_MAX_AGE=0),
        override_settings(DJANGO_THREAD_PERSISTENT_CONNECTIONS=setting),
    ):
        poller = thread_class(alias, iterations)
        poller.start()
        poller.join()
    assert poller.connected_between_units == [kept] * iterations
    assert opened_connections.opened(alias) == (1 if kept else iterations)
    assert opened_connections.still_open() == 0  # closed when the thread ended
