"""Each Django internal django_thread relies on still behaves as the package assumes.

One test per helper of ``django_thread.internals``, run on real databases in
a thread of its own (its connections are its own), so that the matrix over
Python and Django versions names the internal that changed.
"""

from __future__ import annotations

import dataclasses
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections, transaction

from django_thread import internals
from django_thread.tasks.compat import TaskResult, TaskResultStatus
from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT
from tests.processes import run_python
from tests.tasks import tasks as tasks_module


def in_a_new_thread(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a fresh thread, closing whatever it opened; return its result."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = body()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_initialized_connections_lists_only_what_this_thread_created(alias):
    def body():
        before = internals.initialized_connections()
        connections[alias].ensure_connection()
        after = internals.initialized_connections()
        return (
            before,
            [c.alias for c in after],
            [c.alias for c in internals.initialized_connections()],
        )

    before, after, again = in_a_new_thread(body)
    assert before == []
    assert after == again == [alias]


def test_is_connected_follows_open_and_close_without_connecting(alias):
    def body():
        connection = connections[alias]
        states = [internals.is_connected(connection)]
        states.append(internals.is_connected(connection))  # asking did not connect
        connection.ensure_connection()
        states.append(internals.is_connected(connection))
        connection.close()
        states.append(internals.is_connected(connection))
        return states

    assert in_a_new_thread(body) == [False, False, True, False]


def test_in_atomic_block_is_true_only_inside_atomic(alias):
    def body():
        connection = connections[alias]
        states = [internals.in_atomic_block(connection)]
        with transaction.atomic(using=alias):
            states.append(internals.in_atomic_block(connection))
        states.append(internals.in_atomic_block(connection))
        return states

    assert in_a_new_thread(body) == [False, True, False]


def test_rollback_driver_connection_undoes_a_leaked_atomic_block(alias):
    def body():
        transaction.atomic(using=alias).__enter__()  # leaked on purpose
        Record.objects.using(alias).create(name="leaked")
        connection = connections[alias]
        internals.rollback_driver_connection(connection)
        connection.close()
        internals.forget_connection(alias)

    in_a_new_thread(body)
    assert not Record.objects.using(alias).filter(name="leaked").exists()


def test_rollback_driver_connection_is_a_no_op_when_closed(alias):
    def body():
        internals.rollback_driver_connection(connections[alias])
        return internals.is_connected(connections[alias])

    assert in_a_new_thread(body) is False


def test_forget_connection_makes_the_next_access_build_a_new_wrapper(alias):
    def body():
        first = connections[alias]
        internals.forget_connection(alias)
        listed = internals.initialized_connections()
        second = connections[alias]
        return first is second, listed

    same, listed = in_a_new_thread(body)
    assert same is False
    assert listed == []


def a_task_result(**fields: Any) -> Any:
    return TaskResult(
        **{
            "task": tasks_module.add,
            "id": "an-id",
            "status": TaskResultStatus.SUCCESSFUL,
            "enqueued_at": None,
            "started_at": None,
            "last_attempted_at": None,
            "finished_at": None,
            "args": [1, 2],
            "kwargs": {},
            "backend": "default",
            "errors": [],
            "worker_ids": [],
            **fields,
        }
    )


def test_copy_task_result_copies_every_field_and_applies_changes():
    original = a_task_result(worker_ids=["w1"])
    internals.set_task_return_value(original, {"sum": 3})
    copied = internals.copy_task_result(original)
    assert copied is not original and type(copied) is type(original)
    for field in dataclasses.fields(TaskResult):
        assert getattr(copied, field.name) == getattr(original, field.name)
    assert copied.return_value == {"sum": 3}  # the init=False field too

    running = internals.copy_task_result(
        original, status=TaskResultStatus.RUNNING, worker_ids=["w1", "w2"]
    )
    assert running.status == TaskResultStatus.RUNNING
    assert running.worker_ids == ["w1", "w2"] and running.attempts == 2
    assert running.id == original.id and running.args == original.args
    assert original.status == TaskResultStatus.SUCCESSFUL  # left alone
    assert original.worker_ids == ["w1"]


def test_new_task_result_is_what_the_constructor_builds_from_json_scalars():
    fields = {
        "task": tasks_module.add,
        "id": "an-id",
        "status": TaskResultStatus.READY,
        "enqueued_at": None,
        "started_at": None,
        "last_attempted_at": None,
        "finished_at": None,
        "args": [1, "two", 3.0, None, True],
        "kwargs": {"four": 4},
        "backend": "default",
        "errors": [],
        "worker_ids": [],
    }
    built = internals.new_task_result(TaskResult, **fields)
    constructed = TaskResult(**fields)
    assert type(built) is TaskResult
    for field in dataclasses.fields(TaskResult):
        assert getattr(built, field.name) == getattr(constructed, field.name)
    with pytest.raises(ValueError, match="not finished"):
        _ = built.return_value  # the init=False field has its default
    del fields["backend"]
    with pytest.raises(TypeError, match="backend"):
        internals.new_task_result(TaskResult, **fields)
    with pytest.raises(TypeError, match="no field"):
        internals.new_task_result(TaskResult, **fields, backend="x", extra=1)


def test_set_task_return_value_is_what_return_value_reads():
    result = TaskResult(
        task=tasks_module.add,
        id="an-id",
        status=TaskResultStatus.SUCCESSFUL,
        enqueued_at=None,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=[1, 2],
        kwargs={},
        backend="default",
        errors=[],
        worker_ids=[],
    )
    internals.set_task_return_value(result, {"sum": 3})
    assert result.return_value == {"sum": 3}


def test_driver_connection_is_the_db_api_connection_or_none(alias):
    def body():
        connection = connections[alias]
        connection.close()
        states = [internals.driver_connection(connection)]
        connection.ensure_connection()
        raw = internals.driver_connection(connection)
        states.append(hasattr(raw, "cursor") and hasattr(raw, "close"))
        connection.close()
        return states

    assert in_a_new_thread(body) == [None, True]


def test_run_before_threads_join_runs_before_non_daemon_threads_are_joined():
    """A non-daemon thread waiting to be told to stop lets the process exit."""
    script = textwrap.dedent(
        """
        import threading
        from django_thread import internals

        told = threading.Event()
        threading.Thread(target=told.wait).start()  # not a daemon
        internals.run_before_threads_join(told.set)
        """
    )
    result = run_python(script, timeout=30, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_keep_open_until_thread_ends_lifts_conn_max_age_from_connection_created(
    alias,
):
    # connect() sets close_at from CONN_MAX_AGE before it sends
    # connection_created; a receiver that lifts it keeps the connection
    # through Django's own close_old_connections().
    from django.db import close_old_connections
    from django.db.backends.signals import connection_created

    from tests.helpers import database_settings

    def keep(sender, connection, **kwargs):
        if connection.alias == alias:
            seen.append(connection.close_at)
            internals.keep_open_until_thread_ends(connection)

    def body():
        connections[alias].ensure_connection()
        close_old_connections()
        return internals.is_connected(connections[alias])

    seen = []
    with database_settings(alias, CONN_MAX_AGE=0):
        connection_created.connect(keep, weak=False)
        try:
            assert in_a_new_thread(body) is True
        finally:
            connection_created.disconnect(keep)
        assert len(seen) == 1 and seen[0] is not None  # set before the signal
        assert in_a_new_thread(body) is False  # without the receiver: closed


def test_shared_from_another_thread_is_true_only_where_a_wrapper_is_lent(alias):
    connection = connections[alias]
    connection.inc_thread_sharing()
    try:

        def body():
            own = connections[alias]
            states = [internals.shared_from_another_thread(own)]
            internals.lend_connection(alias, connection)
            states.append(connections[alias] is connection)
            states.append(internals.shared_from_another_thread(connection))
            internals.forget_connection(alias)
            return states

        in_lender = internals.shared_from_another_thread(connection)
        assert in_a_new_thread(body) == [False, True, True]
        assert in_lender is False
    finally:
        connection.dec_thread_sharing()


def test_wrap_transaction_stacks_sees_every_push_and_pop_of_atomic(alias):
    pushed: list[str] = []

    class Recording(list):  # type: ignore[type-arg]
        def append(self, item: Any) -> None:
            pushed.append("push")
            super().append(item)

        def pop(self, index: Any = -1) -> Any:
            pushed.append("pop")
            return super().pop(index)

    def body():
        connection = connections[alias]
        connection.ensure_connection()  # connect() starts with new lists
        undo = internals.wrap_transaction_stacks(connection, Recording)
        with transaction.atomic(using=alias):  # outermost: atomic_blocks only
            with transaction.atomic(using=alias):  # a savepoint: both stacks
                pass
            with transaction.atomic(using=alias, savepoint=False):
                pass
        undo()
        return type(connection.savepoint_ids), type(connection.atomic_blocks)

    assert in_a_new_thread(body) == (list, list)
    assert pushed == ["push"] + ["push"] * 2 + ["pop"] * 2 + ["push"] * 2 + [
        "pop"
    ] * 2 + ["pop"]


_WRAPPED_METHODS = {
    "cursor",
    "chunked_cursor",
    "close",
    "close_if_unusable_or_obsolete",
    "connect",
}


def test_wrap_connection_methods_sees_every_cursor_close_and_connect(alias):
    calls: list[str] = []

    def cursors(make: Callable[..., Any]) -> Callable[..., Any]:
        def cursor(*args: Any, **kwargs: Any) -> Any:
            calls.append(make.__name__)
            return make(*args, **kwargs)

        return cursor

    def closes(close: Callable[[], None]) -> Callable[[], None]:
        def closing() -> None:
            calls.append(close.__name__)
            close()

        return closing

    def body():
        from django.db import close_old_connections

        connection = connections[alias]
        # One method already set on the instance, as TestCase sets its guards.
        own = connection.close_if_unusable_or_obsolete
        connection.close_if_unusable_or_obsolete = own
        undo = internals.wrap_connection_methods(
            connection,
            cursors=cursors,
            closes=closes,
            after_connect=lambda: calls.append("connected"),
        )
        seen = {}
        connection.ensure_connection()
        seen["connect"], calls[:] = list(calls), []
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        seen["cursor"], calls[:] = list(calls), []
        list(Record.objects.using(alias).iterator())
        seen["iterator"], calls[:] = list(calls), []
        close_old_connections()  # close_if_unusable_or_obsolete()
        connection.close()
        seen["close"], calls[:] = list(calls), []
        undo()
        left = {
            name: vars(connection)[name]
            for name in vars(connection)
            if name in _WRAPPED_METHODS
        }
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return seen, calls, left == {"close_if_unusable_or_obsolete": own}

    seen, after_undo, restored = in_a_new_thread(body)
    # Connecting may make cursors (PostgreSQL sets the time zone with one).
    assert seen["connect"][-1:] == ["connected"]
    assert seen["cursor"] == ["cursor"]
    # iterator() asks for a chunked cursor, which may be a plain one.
    assert seen["iterator"][0] == "chunked_cursor"
    assert seen["close"] == ["close_if_unusable_or_obsolete", "close", "close"]
    # The undo put back exactly what the instance had.
    assert after_undo == [] and restored


def test_only_testcase_atomic_blocks_tells_the_tests_blocks_from_the_codes(
    django_db_blocker,
):
    from django.test import TestCase

    seen: list[bool] = []

    class Probe(TestCase):
        databases = {"default"}

        def test_probe(self) -> None:
            seen.append(internals.only_testcase_atomic_blocks(connections["default"]))
            with transaction.atomic():
                seen.append(
                    internals.only_testcase_atomic_blocks(connections["default"])
                )

    Probe.__test__ = False
    import unittest

    result = unittest.TestResult()
    with django_db_blocker.unblock():
        unittest.defaultTestLoader.loadTestsFromTestCase(Probe).run(result)
    assert result.wasSuccessful(), result.errors
    assert seen == [True, False]


def test_close_in_memory_database_handle_closes_what_close_refuses(
    django_db_blocker,
):
    from django.db.utils import ConnectionHandler

    handler = ConnectionHandler(
        {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    )
    connection = handler["default"]
    with django_db_blocker.unblock():
        connection.ensure_connection()
    connection.close()  # ignored: closing would destroy the database
    refused = internals.is_connected(connection)
    internals.close_in_memory_database_handle(connection)
    assert (refused, internals.is_connected(connection)) == (True, False)


def test_locks_a_unit_takes_are_the_signal_and_local_locks_a_unit_holds():
    """Each lock is one a unit of work really takes, as the fork hooks assume."""
    from django.core.signals import request_started

    from django_thread import unit_of_work

    locks = internals.locks_a_unit_takes()
    assert request_started.lock in locks
    # Hold them all in another thread: a unit in this thread must wait.
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        done.wait(10)
        for lock in reversed(locks):
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    unit = threading.Thread(target=unit_of_work(lambda: None))
    unit.start()
    unit.join(0.2)
    blocked = unit.is_alive()
    done.set()
    holder.join(10)
    unit.join(10)
    assert blocked


def test_thread_sensitive_context_runs_sync_calls_on_the_given_executor():
    """asgiref 3.13's executor argument, or its class attribute before 3.13."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import SyncToAsync, sync_to_async

    from django_thread.internals import thread_sensitive_context

    executor = ThreadPoolExecutor(max_workers=1)
    try:
        ours = executor.submit(threading.get_ident).result()

        async def request() -> list[int]:
            async with thread_sensitive_context(executor):
                first = await sync_to_async(threading.get_ident)()
                second = await sync_to_async(threading.get_ident)()
            return [first, second]

        assert asyncio.run(request()) == [ours, ours]
        # Not shut down by asgiref as the context ended, and not left behind.
        assert executor.submit(threading.get_ident).result() == ours
        assert executor not in SyncToAsync.context_to_thread_executor.values()
    finally:
        executor.shutdown()


class _Sender:
    pass


def test_live_receivers_match_djangos_and_follow_connect_and_disconnect():
    from django.dispatch import Signal

    signal = Signal()

    def for_everyone(**kwargs):
        pass

    def for_the_sender(**kwargs):
        pass

    def for_another(**kwargs):
        pass

    signal.connect(for_everyone)
    signal.connect(for_the_sender, sender=_Sender)
    signal.connect(for_another, sender=dict)
    expected = signal._live_receivers(_Sender)[0]
    assert internals.live_receivers(signal, _Sender) == expected
    assert expected == [for_everyone, for_the_sender]
    assert internals.live_receivers(signal, _Sender) == expected  # cached
    assert internals.live_receivers(signal, None) == [for_everyone]
    signal.disconnect(for_everyone)
    assert internals.live_receivers(signal, _Sender) == [for_the_sender]
    signal.connect(for_everyone)
    assert internals.live_receivers(signal, _Sender) == [for_the_sender, for_everyone]


def test_live_receivers_leave_dead_and_async_receivers_to_django():
    from django.dispatch import Signal

    signal = Signal()

    def receiver(**kwargs):
        pass

    signal.connect(receiver)  # weakly
    assert internals.live_receivers(signal, None) == [receiver]
    del receiver
    assert internals.live_receivers(signal, None) is None  # Django cleans up
    assert signal.send_robust(sender=None) == []
    assert internals.live_receivers(signal, None) == []

    async def async_receiver(**kwargs):
        pass

    signal.connect(async_receiver)
    assert internals.live_receivers(signal, None) is None
    assert internals.live_receivers(type("Sub", (Signal,), {})(), None) is None
    assert internals.live_receivers(signal, object()) is None  # not cacheable


def test_after_cursor_close_runs_once_per_close_however_the_cursor_is_closed(alias):
    def body():
        connection = connections[alias]
        closed: list[str] = []
        with connection.cursor() as cursor:
            internals.after_cursor_close(cursor, lambda: closed.append("with"))
            cursor.execute("SELECT 1")
        cursor = connection.cursor()
        internals.after_cursor_close(cursor, lambda: closed.append("close"))
        cursor.execute("SELECT 1")
        cursor.close()
        driver_closed = (
            cursor.cursor.closed if hasattr(cursor.cursor, "closed") else None
        )
        connection.close()
        return closed, driver_closed

    closed, driver_closed = in_a_new_thread(body)
    assert closed == ["with", "close"]
    # The driver's cursor was really closed, where the driver can say so.
    assert driver_closed in (True, None)
