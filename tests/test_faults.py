"""Connections killed by the server: the pool recovers, jobs keep working.

Each test runs its calls through every caller (``tests.helpers.CALLERS``):
the executor, and ``to_thread`` and ``sync_to_async(thread_sensitive=False)``
on the shared pool, which owe the same guarantees.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from django_thread import ThreadPoolExecutor
from testproject.jobs.models import Record
from tests.helpers import (
    CALLERS,
    calls_through,
    database_settings,
    kill_server_connections,
    native_postgres_pool,
    server_connection_count,
    wait_for,
)

WORKERS = 3


def run_round(executor, alias, start, count=WORKERS * 2):
    """Submit ORM jobs; return how many failed. Workers are all busy at once."""
    barrier = threading.Barrier(WORKERS, timeout=10)

    def job(i):
        Record.objects.using(alias).create(name="job", value=i)
        if i < start + WORKERS:
            barrier.wait()  # make every worker hold a connection

    futures = [executor.submit(job, i) for i in range(start, start + count)]
    return sum(1 for f in futures if f.exception(timeout=30) is not None)


def held_connections(alias, caller):
    """The workers' connections: one per busy worker, WORKERS for the executor.

    The shared pool is larger, so it may start a worker for each call.
    """
    held = server_connection_count(alias)
    assert held == WORKERS if caller == "executor" else WORKERS <= held <= WORKERS * 2
    return held


@pytest.mark.parametrize("caller", CALLERS)
def test_health_checks_survive_server_side_kill_without_a_failure(server_alias, caller):
    with database_settings(server_alias, CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True):
        with calls_through(caller, max_workers=WORKERS) as executor:
            assert run_round(executor, server_alias, 0) == 0
            held = held_connections(server_alias, caller)
            assert kill_server_connections(server_alias) == held
            assert run_round(executor, server_alias, 100) == 0
            held = held_connections(server_alias, caller)
            assert kill_server_connections(server_alias) == held
            assert run_round(executor, server_alias, 200) == 0
    assert Record.objects.using(server_alias).count() == WORKERS * 2 * 3


@pytest.mark.parametrize("caller", CALLERS)
def test_without_health_checks_each_worker_fails_once_then_recovers(
    server_alias, caller
):
    """Django's own behaviour, kept: the broken connection is dropped at unit end.

    Calls one after another all run on the same, first, worker.
    """
    with database_settings(server_alias, CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=False):
        with calls_through(caller, max_workers=1) as executor:
            executor.submit(
                lambda: Record.objects.using(server_alias).exists()
            ).result()
            kill_server_connections(server_alias)
            first = executor.submit(lambda: Record.objects.using(server_alias).exists())
            assert first.exception(timeout=10) is not None
            for _ in range(3):
                assert (
                    executor.submit(
                        lambda: Record.objects.using(server_alias).count()
                    ).result()
                    == 0
                )


def _idle_timeout_options(alias):
    """Server settings that make an idle session die after one second."""
    if connections[alias].vendor == "postgresql":
        return {"options": "-c idle_session_timeout=1000"}
    return {"init_command": "SET SESSION wait_timeout=1"}


@pytest.mark.parametrize("caller", CALLERS)
def test_idle_timeout_on_the_server_does_not_fail_later_jobs(server_alias, caller):
    options = dict(connections.settings[server_alias].get("OPTIONS", {}))
    options.update(_idle_timeout_options(server_alias))
    with database_settings(
        server_alias, CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True, OPTIONS=options
    ):
        with calls_through(caller, max_workers=WORKERS) as executor:
            assert run_round(executor, server_alias, 0) == 0
            wait_for(
                lambda: server_connection_count(server_alias) == 0,
                "the server to time the idle connections out",
            )
            assert run_round(executor, server_alias, 100) == 0
    assert Record.objects.using(server_alias).count() == WORKERS * 4


@pytest.fixture
def postgres_pool():
    """Django's native psycopg pool, smaller than the executor."""
    pytest.importorskip("psycopg_pool")
    with native_postgres_pool(max_size=2) as pool:
        yield pool


@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_native_pool_smaller_than_max_workers(postgres_pool):
    seen = []

    def job(i):
        Record.objects.using("postgres").create(name="pooled", value=i)
        seen.append(server_connection_count("postgres") + 1)
        time.sleep(0.005)

    with ThreadPoolExecutor(max_workers=5) as executor:
        list(executor.map(job, range(40)))
    assert Record.objects.using("postgres").filter(name="pooled").count() == 40
    assert max(seen) <= 2 + 1  # the pool's connections, plus the test's own
    # Every unit gave its connection back: the pool holds them all, idle.
    connections["postgres"].close()  # the test's own checkout, too
    stats = postgres_pool.get_stats()
    assert stats["pool_size"] - stats["pool_available"] == 0
