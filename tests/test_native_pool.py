"""Django's native PostgreSQL pool: no thread of ours holds a slot between units.

A pool of two connections serves eight threads of every kind django_thread
runs: ``Thread`` loops, executor workers, ``to_thread`` calls and Tasks
backend workers. A ``request_finished`` receiver queries the database after
Django's own receiver gave the connection back, as an audit log might: the
unit's end must give that one back too, or the thread holds a slot while it
waits for work and the others end in ``PoolTimeout``.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from django.core.signals import request_finished
from django.test import override_settings

import django_thread
from testproject.jobs.models import Record
from tests.helpers import native_postgres_pool, wait_for
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished, tasks_setting

UNITS = 200
PER_KIND = UNITS // 4  # Thread, executor, to_thread, Tasks backend
TWO = 2  # threads of each kind: eight in all, for a pool of two


def unit(name: str, value: int) -> None:
    Record.objects.using("postgres").create(name=name, value=value)


def audit(sender, **kwargs):
    """A late ``request_finished`` receiver that uses the database."""
    if threading.current_thread() is not threading.main_thread():
        Record.objects.using("postgres").exists()


@pytest.fixture
def small_pool():
    pytest.importorskip("psycopg_pool")
    with native_postgres_pool(max_size=2, timeout=2) as pool:
        pool.open(wait=True)
        yield pool


@pytest.fixture
def late_receiver():
    request_finished.connect(audit)
    try:
        yield
    finally:
        request_finished.disconnect(audit)


def checked_out(pool) -> int:
    stats = pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_eight_threads_share_a_pool_of_two_without_a_timeout(
    small_pool, late_receiver, caplog
):
    errors: list[BaseException] = []
    loops_done = threading.Event()

    class Loop(django_thread.Thread):
        def run(self):
            for i in range(PER_KIND // TWO):
                try:
                    with django_thread.unit_of_work():
                        unit("thread", i)
                except Exception as exc:
                    errors.append(exc)
            # Stay alive, idle, until every kind is done.
            loops_done.wait(30)

    async def to_thread_calls():
        async def one_after_another(start):
            for i in range(start, PER_KIND, TWO):
                try:
                    await django_thread.to_thread(unit, "to_thread", i)
                except Exception as exc:
                    errors.append(exc)

        await asyncio.gather(*(one_after_another(start) for start in range(TWO)))

    with (
        override_settings(TASKS=tasks_setting(["default"], WORKERS=TWO)),
        caplog.at_level(logging.ERROR),
        django_thread.ThreadPoolExecutor(max_workers=TWO) as executor,
    ):
        loops = [Loop() for _ in range(TWO)]
        for loop in loops:
            loop.start()
        futures = [executor.submit(unit, "executor", i) for i in range(PER_KIND)]
        results = [
            tm.write_record.enqueue("postgres", "task", i) for i in range(PER_KIND)
        ]
        asyncio.run(to_thread_calls())
        errors += [f.exception(30) for f in futures if f.exception(30) is not None]
        for result in results:
            if finished(result, timeout=30).status != tm.TaskResultStatus.SUCCESSFUL:
                errors.append(AssertionError(result.errors))
        # Every thread is alive and idle now: none may hold a slot.
        wait_for(lambda: checked_out(small_pool) == 0, "every slot to be free")
        loops_done.set()
        for loop in loops:
            loop.join()
    assert errors == []
    # No receiver timed out either (send_robust logs and goes on).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert Record.objects.using("postgres").count() == UNITS
