"""Transactions: the caller's is never touched; a unit's leak is repaired."""

from __future__ import annotations

import logging

import pytest
from django.db import connections, transaction

from django_thread import Thread, ThreadPoolExecutor, Timer, unit_of_work
from testproject.jobs.models import Record
from tests.helpers import CALLERS, backend_id, calls_through, database_settings


@pytest.mark.parametrize("how", ["thread", "timer", "executor"])
def test_starting_work_inside_atomic_leaves_the_caller_transaction_intact(alias, how):
    seen = []

    def job():
        # A separate connection: it cannot see the caller's uncommitted row.
        seen.append(Record.objects.using(alias).count())

    with database_settings(alias, CONN_MAX_AGE=0):
        with transaction.atomic(using=alias):
            Record.objects.using(alias).create(name="caller-before")
            if how == "thread":
                worker = Thread(target=job)
                worker.start()
                worker.join()
            elif how == "timer":
                worker = Timer(0.001, job)
                worker.start()
                worker.join()
            else:
                with ThreadPoolExecutor(max_workers=1) as executor:
                    executor.submit(job).result()
            assert seen == [0]
            # Same connection, same transaction, still usable.
            assert connections[alias].in_atomic_block
            Record.objects.using(alias).create(name="caller-after")
    names = set(Record.objects.using(alias).values_list("name", flat=True))
    assert {"caller-before", "caller-after"} <= names


def leak_atomic(alias, name):
    """A buggy job: enters atomic() and never leaves it."""
    transaction.atomic(using=alias).__enter__()
    Record.objects.using(alias).create(name=name)


def leak_autocommit_off(alias, name):
    transaction.set_autocommit(False, using=alias)
    Record.objects.using(alias).create(name=name)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    "leak", [leak_atomic, leak_autocommit_off], ids=["atomic", "autocommit"]
)
@pytest.mark.parametrize("max_age", [0, 600], ids=["age0", "age600"])
def test_leaked_transaction_is_rolled_back_and_does_not_poison_next_job(
    alias, leak, max_age, caller, caplog
):
    """Calls one after another run on one worker: the leak's, if not repaired."""
    with database_settings(alias, CONN_MAX_AGE=max_age):
        with caplog.at_level(logging.WARNING, logger="django_thread"):
            with calls_through(caller, max_workers=1) as executor:
                executor.submit(leak, alias, "leaked").result()
                for i in range(3):
                    executor.submit(
                        lambda i=i: Record.objects.using(alias).create(name=f"next-{i}")
                    ).result()
                # The worker's connection is in autocommit again.
                assert executor.submit(
                    lambda: transaction.get_autocommit(using=alias)
                ).result()
    names = set(Record.objects.using(alias).values_list("name", flat=True))
    assert names == {"next-0", "next-1", "next-2"}
    assert "left a transaction open" in caplog.text


def test_leaked_transaction_in_a_thread_is_rolled_back(alias):
    thread = Thread(target=leak_atomic, args=(alias, "leaked"))
    thread.start()
    thread.join()
    assert not Record.objects.using(alias).filter(name="leaked").exists()


def test_leak_inside_a_long_running_loop_is_repaired_per_iteration(alias):
    class Loop(Thread):
        def run(self):
            for i in range(3):
                with unit_of_work():
                    if i == 0:
                        leak_atomic(alias, "leaked")
                    else:
                        Record.objects.using(alias).create(name=f"ok-{i}")

    loop = Loop()
    loop.start()
    loop.join()
    names = set(Record.objects.using(alias).values_list("name", flat=True))
    assert names == {"ok-1", "ok-2"}


def test_unit_of_work_inside_atomic_is_refused_and_keeps_the_transaction(alias):
    with transaction.atomic(using=alias):
        Record.objects.using(alias).create(name="caller")
        with pytest.raises(
            transaction.TransactionManagementError, match="inside transaction.atomic"
        ):
            with unit_of_work():
                pytest.fail("the body must not run")
        assert connections[alias].in_atomic_block
        Record.objects.using(alias).create(name="caller-2")
    assert Record.objects.using(alias).count() == 2


def test_decorated_function_inside_atomic_is_refused(alias):
    @unit_of_work()
    def job():
        return "ran"

    with transaction.atomic(using=alias):
        with pytest.raises(transaction.TransactionManagementError):
            job()
    assert job() == "ran"


def test_atomic_inside_a_unit_commits_normally(alias):
    def job():
        with transaction.atomic(using=alias):
            Record.objects.using(alias).create(name="a")
            Record.objects.using(alias).create(name="b")

    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(job).result()
    assert Record.objects.using(alias).count() == 2


def open_manual_transaction(alias):
    """What a caller does by hand: autocommit off, rows written, not committed."""
    transaction.set_autocommit(False, using=alias)
    Record.objects.using(alias).create(name="manual")
    return backend_id(alias, connect=False)


def with_block(body):
    with unit_of_work():
        body()


def called_decorator(body):
    unit_of_work()(body)()


def bare_decorator(body):
    unit_of_work(body)()


@pytest.mark.parametrize(
    "enter",
    [with_block, called_decorator, bare_decorator],
    ids=["with", "decorator()", "decorator"],
)
def test_unit_of_work_with_autocommit_off_is_refused_and_keeps_the_rows(alias, enter):
    ran = []
    try:
        before = open_manual_transaction(alias)
        with pytest.raises(
            transaction.TransactionManagementError, match="autocommit is off"
        ):
            enter(lambda: ran.append(True))
        assert ran == []
        # The same connection, still in the caller's transaction.
        assert backend_id(alias, connect=False) == before
        assert not transaction.get_autocommit(using=alias)
        Record.objects.using(alias).create(name="manual-2")
        transaction.commit(using=alias)
    finally:
        transaction.rollback(using=alias)
        transaction.set_autocommit(True, using=alias)
    names = sorted(Record.objects.using(alias).values_list("name", flat=True))
    assert names == ["manual", "manual-2"]
    # Back in autocommit, the same unit starts.
    enter(lambda: ran.append(True))
    assert ran == [True]


def test_autocommit_off_in_a_thread_loop_is_refused_not_rolled_back(alias):
    """A long-running thread's loop body gets the same protection."""
    outcome = []

    class Loop(Thread):
        def run(self):
            transaction.set_autocommit(False, using=alias)
            try:
                Record.objects.using(alias).create(name="manual")
                try:
                    with unit_of_work():
                        outcome.append("ran")
                except transaction.TransactionManagementError:
                    outcome.append("refused")
                transaction.commit(using=alias)
            finally:
                transaction.set_autocommit(True, using=alias)

    loop = Loop()
    loop.start()
    loop.join()
    assert outcome == ["refused"]
    assert list(Record.objects.using(alias).values_list("name", flat=True)) == [
        "manual"
    ]
