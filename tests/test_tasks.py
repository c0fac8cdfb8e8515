"""The Tasks backend: django_thread.tasks.ThreadPoolBackend.

Runs on Django 5.2 with the django-tasks backport and on Django >= 6.0 with
``django.tasks``; database tests run on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import django
import pytest
from asgiref.sync import async_to_sync
from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import transaction
from django.test import override_settings
from django.utils import timezone, translation

from django_thread import registry
from django_thread.tasks import ThreadPoolBackend, reset_pools
from django_thread.tasks.pools import existing_pool
from testproject.jobs.models import Record
from tests import tasks_module as tm
from tests import tasks_parity
from tests.conftest import (
    IN_CI,
    database_settings,
    kill_server_connections,
    server_connection_count,
    wait_for,
)

# Tests without the alias fixture still need a database: the workers and the
# transaction tests use it, outside any test-wide transaction.
pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "django_thread.tasks.ThreadPoolBackend"
REPO = Path(__file__).resolve().parent.parent


def tasks_setting(queues: list[str] | None = None, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": BACKEND,
            "QUEUES": ["default", "emails"] if queues is None else queues,
            "OPTIONS": options,
        }
    }


@pytest.fixture
def configure() -> Iterator[Callable[..., None]]:
    """Point TASKS["default"] at ThreadPoolBackend with these OPTIONS.

    On the way out every gate opens first, so that resetting the pool never
    waits on a task a failed test left holding.
    """
    with contextlib.ExitStack() as stack:

        def apply(queues: list[str] | None = None, **options: Any) -> None:
            stack.enter_context(
                override_settings(TASKS=tasks_setting(queues, **options))
            )

        yield apply
        for gate in tm.GATES.values():
            gate.set()
    tm.GATES.clear()


@pytest.fixture
def backend(configure: Callable[..., None]) -> ThreadPoolBackend:
    configure()
    return tm.task_backends["default"]


@pytest.fixture
def gate() -> Callable[[], str]:
    counter = iter(range(1_000_000))

    def make() -> str:
        name = f"gate-{next(counter)}"
        tm.GATES[name] = threading.Event()
        return name

    return make


def finished(result: Any, timeout: float = 10.0) -> Any:
    """Wait until the result is final; return it refreshed."""

    def done() -> bool:
        result.refresh()
        return result.is_finished

    wait_for(done, f"task {result.task.name} to finish", timeout=timeout)
    return result


def status_of(result: Any) -> str:
    result.refresh()
    return result.status


# --- enqueue and results -------------------------------------------------


def test_enqueue_returns_ready_result_and_runs_on_a_worker(backend):
    result = tm.whoami.enqueue()
    assert result.status == tm.TaskResultStatus.READY
    assert result.backend == "default"
    assert result.enqueued_at is not None
    finished(result)
    assert result.status == tm.TaskResultStatus.SUCCESSFUL
    assert result.return_value.startswith("django_thread.tasks[default/default]")
    assert result.return_value != threading.current_thread().name
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert len(result.worker_ids) == 1 and result.attempts == 1
    assert tm.whoami.get_result(result.id).return_value == result.return_value


def test_status_goes_ready_running_successful(configure, gate):
    configure(WORKERS=1)
    held = gate()
    running = tm.hold.enqueue(held)
    waiting = tm.add.enqueue(1, 2)
    wait_for(lambda: status_of(running) == tm.TaskResultStatus.RUNNING, "RUNNING")
    assert running.started_at is not None and running.finished_at is None
    assert status_of(waiting) == tm.TaskResultStatus.READY
    with pytest.raises(ValueError, match="not finished"):
        _ = running.return_value
    tm.GATES[held].set()
    assert finished(running).return_value == held
    assert finished(waiting).return_value == 3


def test_failed_task_records_exception_class_and_traceback(backend):
    result = finished(tm.fail.enqueue("it broke"))
    assert result.status == tm.TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "it broke" in error.traceback and "Traceback" in error.traceback
    assert result.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value


def test_system_exit_in_a_task_fails_it_and_the_worker_goes_on(configure):
    configure(WORKERS=1)
    exited = finished(tm.exit_worker.enqueue())
    assert exited.errors[0].exception_class_path == "builtins.SystemExit"
    after = finished(tm.add.enqueue(2, 2))
    assert after.return_value == 4 and after.worker_ids == exited.worker_ids


def test_unknown_result_id_raises(backend):
    with pytest.raises(tm.TaskResultDoesNotExist):
        backend.get_result("no-such-id")
    with pytest.raises(tm.TaskResultDoesNotExist):
        tm.add.get_result("no-such-id")


def test_results_are_bounded_in_count(configure):
    configure(WORKERS=1, MAX_RESULTS=2)
    results = [finished(tm.add.enqueue(i, 0)) for i in range(3)]
    with pytest.raises(tm.TaskResultDoesNotExist):
        results[0].refresh()
    assert [r.return_value for r in results[1:]] == [1, 2]
    for result in results[1:]:
        result.refresh()


def test_results_are_bounded_in_age(configure):
    configure(RESULT_TTL=0.05)
    result = finished(tm.add.enqueue(1, 1))

    def evicted() -> bool:
        try:
            result.refresh()
        except tm.TaskResultDoesNotExist:
            return True
        return False

    wait_for(evicted, "the result to expire")


def test_running_results_are_never_evicted(configure, gate):
    configure(WORKERS=1, MAX_RESULTS=1)
    held = gate()
    running = tm.hold.enqueue(held)
    wait_for(lambda: status_of(running) == tm.TaskResultStatus.RUNNING, "RUNNING")
    others = [tm.add.enqueue(i, 0) for i in range(3)]
    assert status_of(running) == tm.TaskResultStatus.RUNNING
    tm.GATES[held].set()
    assert finished(others[-1]).return_value == 2  # the last one finished


def test_results_are_visible_from_any_thread(backend):
    result = finished(tm.add.enqueue(4, 5))
    seen: list[Any] = []
    other = threading.Thread(target=lambda: seen.append(tm.add.get_result(result.id)))
    other.start()
    other.join()
    assert seen[0].return_value == 9


# --- priority, run_after, queues ----------------------------------------


def test_higher_priority_runs_first_and_fifo_within_a_priority(configure, gate):
    configure(WORKERS=1)
    tm.ORDER.clear()
    held = gate()
    blocker = tm.hold.enqueue(held)
    wait_for(lambda: status_of(blocker) == tm.TaskResultStatus.RUNNING, "RUNNING")
    plan = [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -3), ("f", 10)]
    results = [
        tm.record_order.using(priority=priority).enqueue(label)
        for label, priority in plan
    ]
    tm.GATES[held].set()
    for result in results:
        finished(result)
    assert tm.ORDER == ["f", "b", "d", "a", "c", "e"]


def test_run_after_is_respected_and_does_not_hold_the_worker(configure):
    configure(WORKERS=1)
    run_after = timezone.now() + timedelta(milliseconds=300)
    deferred = tm.add.using(run_after=run_after).enqueue(1, 1)
    far = tm.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(0, 0)
    immediate = finished(tm.add.enqueue(2, 2))
    assert status_of(deferred) == tm.TaskResultStatus.READY
    finished(deferred)
    assert deferred.started_at >= run_after
    assert immediate.finished_at < deferred.started_at
    assert status_of(far) == tm.TaskResultStatus.READY


def test_deferred_tasks_falling_due_together_use_several_workers(configure, gate):
    configure(WORKERS=2)
    held = [gate(), gate()]
    run_after = timezone.now() + timedelta(milliseconds=200)
    results = [tm.hold.using(run_after=run_after).enqueue(name) for name in held]
    wait_for(
        lambda: all(status_of(r) == tm.TaskResultStatus.RUNNING for r in results),
        "both deferred tasks to run at once",
    )
    for name in held:
        tm.GATES[name].set()
    for result in results:
        finished(result)


def test_unknown_queue_is_rejected(backend):
    with pytest.raises(tm.InvalidTask, match="Queue 'nope'"):
        tm.add.using(queue_name="nope")


def test_each_queue_has_its_own_worker_count(configure, gate):
    configure(WORKERS=3, QUEUE_WORKERS={"emails": 1})
    held = gate()
    defaults = [tm.hold.enqueue(held) for _ in range(3)]
    emails = [tm.hold.using(queue_name="emails").enqueue(held) for _ in range(3)]
    wait_for(
        lambda: all(status_of(r) == tm.TaskResultStatus.RUNNING for r in defaults),
        "three default workers",
    )
    wait_for(
        lambda: [status_of(r) for r in emails].count(tm.TaskResultStatus.RUNNING) == 1,
        "one emails worker",
    )
    names = [t.name for t in threading.enumerate()]
    assert sum(n.startswith("django_thread.tasks[default/emails]") for n in names) == 1
    assert sum(n.startswith("django_thread.tasks[default/default]") for n in names) == 3
    tm.GATES[held].set()
    for result in defaults + emails:
        assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL


# --- async, context, serialization --------------------------------------


def test_async_task_runs_on_a_worker(backend):
    assert finished(tm.async_add.enqueue(20, 22)).return_value == 42


def test_takes_context_gets_a_task_context(backend):
    result = finished(tm.context_info.enqueue("hello"))
    value = result.return_value
    assert value["label"] == "hello"
    assert value["attempt"] == 1
    assert value["id"] == result.id
    assert value["worker_ids"] == result.worker_ids and len(result.worker_ids) == 1


def test_arguments_and_return_values_go_through_json(backend):
    arguments = [(1, 2), {1: "one", "nested": (3, 4)}]
    result = tm.echo.enqueue(*arguments, b"bytes", flag=True)
    arguments[1]["late"] = "mutation after enqueue"
    value = finished(result).return_value
    assert value == {
        "args": [[1, 2], {"1": "one", "nested": [3, 4]}, "bytes"],
        "kwargs": {"flag": True},
        "types": ["list", "dict", "str"],
    }
    assert result.args == [[1, 2], {"1": "one", "nested": [3, 4]}, "bytes"]
    assert finished(tm.return_tuple_and_int_keys.enqueue()).return_value == [
        [1, 2],
        {"1": "one"},
    ]


def test_unserializable_arguments_fail_in_the_caller(backend):
    with pytest.raises(TypeError, match="Unsupported type"):
        tm.echo.enqueue(timezone.now())
    with pytest.raises(ValueError):
        tm.echo.enqueue(float("nan"))


def test_unserializable_return_value_fails_the_task(backend):
    result = finished(tm.return_unserializable.enqueue())
    assert result.status == tm.TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.TypeError"


def test_tasks_run_in_a_fresh_context(configure):
    configure(WORKERS=1)
    token = tm.REQUEST_ID.set("caller")
    try:
        with translation.override("de"):
            assert finished(tm.set_context.enqueue("task")).return_value == "task"
            seen = finished(tm.read_context.enqueue()).return_value
    finally:
        tm.REQUEST_ID.reset(token)
    assert seen == {"request_id": "unset", "language": "en"}


# --- signals, async API --------------------------------------------------


@contextlib.contextmanager
def recorded_signals() -> Iterator[list[tuple[str, Any, str, str, bool]]]:
    events: list[tuple[str, Any, str, str, bool]] = []
    main = threading.get_ident()

    def receiver_for(name: str) -> Callable[..., None]:
        def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
            events.append(
                (
                    name,
                    sender,
                    task_result.id,
                    task_result.status,
                    threading.get_ident() == main,
                )
            )

        return receiver

    receivers = {
        signal: receiver_for(name)
        for name, signal in [
            ("enqueued", tm.task_enqueued),
            ("started", tm.task_started),
            ("finished", tm.task_finished),
        ]
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    try:
        yield events
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)


def test_task_signals_are_sent_like_djangos_backends(backend):
    with recorded_signals() as events:
        ok = finished(tm.add.enqueue(1, 1))
        failed = finished(tm.fail.enqueue("no"))
    for result, final in [(ok, "SUCCESSFUL"), (failed, "FAILED")]:
        mine = [event for event in events if event[2] == result.id]
        assert [
            (name, status, in_caller) for name, _, _, status, in_caller in mine
        ] == [
            ("enqueued", "READY", True),
            ("started", "RUNNING", False),
            ("finished", final, False),
        ]
        assert all(sender is ThreadPoolBackend for _, sender, _, _, _ in mine)


def test_failing_signal_receiver_does_not_stop_the_task(backend):
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    tm.task_started.connect(broken)
    try:
        result = finished(tm.add.enqueue(3, 4))
    finally:
        tm.task_started.disconnect(broken)
    assert result.return_value == 7


def test_aenqueue_and_aget_result_from_async_code(backend):
    import asyncio

    async def view() -> Any:
        result = await tm.add.aenqueue(5, 6)
        for _ in range(500):
            fetched = await tm.add.aget_result(result.id)
            if fetched.is_finished:
                await result.arefresh()
                return result
            await asyncio.sleep(0.01)
        raise AssertionError("task did not finish")

    result = async_to_sync(view)()
    assert result.return_value == 11


# --- transactions ----------------------------------------------------------


def test_enqueue_in_atomic_waits_for_commit(alias, configure):
    configure(DATABASE=alias)
    with transaction.atomic(using=alias):
        Record.objects.using(alias).create(name="committed-first")
        result = tm.count_records.enqueue(alias, "committed-first")
        assert result.status == tm.TaskResultStatus.READY
        assert result.enqueued_at is None
        with pytest.raises(tm.TaskResultDoesNotExist):
            result.refresh()
    assert finished(result).return_value == 1
    assert result.enqueued_at is not None


def test_enqueue_in_rolled_back_atomic_never_runs(alias, configure):
    configure(DATABASE=alias)
    with recorded_signals() as events:
        with transaction.atomic(using=alias):
            kept = tm.write_record.enqueue(alias, "kept")
            try:
                with transaction.atomic(using=alias):
                    dropped = tm.write_record.enqueue(alias, "dropped")
                    raise RuntimeError("roll back the savepoint")
            except RuntimeError:
                pass
        finished(kept)
    with pytest.raises(tm.TaskResultDoesNotExist):
        dropped.refresh()
    assert not [event for event in events if event[2] == dropped.id]
    assert not Record.objects.using(alias).filter(name="dropped").exists()


def test_enqueue_on_commit_can_be_turned_off(configure):
    configure(ENQUEUE_ON_COMMIT=False)
    with transaction.atomic():
        result = tm.add.enqueue(1, 2)
        assert result.enqueued_at is not None
        result.refresh()  # known before the commit
    assert finished(result).return_value == 3


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_atomic_on_another_database_does_not_defer(configure):
    configure(DATABASE="default")
    with transaction.atomic(using="postgres"):
        result = tm.add.enqueue(2, 3)
        assert result.enqueued_at is not None
    assert finished(result).return_value == 5


# --- connections -------------------------------------------------------------


def test_writing_and_failing_tasks_leave_no_connection_open(
    alias, configure, opened_connections
):
    configure(WORKERS=3)
    writes = [tm.write_record.enqueue(alias, "row", i) for i in range(12)]
    failures = [tm.query_missing_table.enqueue(alias) for _ in range(3)]
    async_writes = [tm.async_write_record.enqueue(alias, "async-row") for _ in range(3)]
    for result in writes + async_writes:
        assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL
    for result in failures:
        assert finished(result).status == tm.TaskResultStatus.FAILED
    assert Record.objects.using(alias).filter(name="row").count() == 12
    assert Record.objects.using(alias).filter(name="async-row").count() == 3
    assert opened_connections.opened(alias) >= 1
    assert opened_connections.still_open(alias) == 0
    if alias != "default":
        wait_for(
            lambda: server_connection_count(alias) == 0, "server connections to end"
        )


def test_leaked_transaction_is_rolled_back_and_the_worker_goes_on(
    alias, configure, opened_connections
):
    configure(WORKERS=1)
    leaked = finished(tm.leak_transaction.enqueue(alias, "leaked"))
    after = finished(tm.write_record.enqueue(alias, "after"))
    assert leaked.status == after.status == tm.TaskResultStatus.SUCCESSFUL
    assert leaked.worker_ids == after.worker_ids
    assert not Record.objects.using(alias).filter(name="leaked").exists()
    assert Record.objects.using(alias).filter(name="after").count() == 1
    assert opened_connections.still_open(alias) == 0


def test_tasks_survive_the_server_killing_worker_connections(server_alias, configure):
    alias = server_alias
    with database_settings(alias, CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True):
        configure(WORKERS=2)
        for result in [tm.write_record.enqueue(alias, "before", i) for i in range(6)]:
            assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL
        assert server_connection_count(alias) >= 1  # kept, per CONN_MAX_AGE
        assert kill_server_connections(alias) >= 1
        after = [tm.write_record.enqueue(alias, "after", i) for i in range(8)]
        for result in after:
            assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL, (
                result.errors
            )
        assert Record.objects.using(alias).filter(name="after").count() == 8
        reset_pools()  # shutting the pool down closes the workers' connections
        wait_for(lambda: server_connection_count(alias) == 0, "workers to disconnect")


# --- the process-wide pool ---------------------------------------------------


def test_one_pool_per_alias_whatever_the_thread(backend):
    finished(tm.add.enqueue(1, 1))
    pool = existing_pool("default")
    instances: list[Any] = []

    def enqueue_elsewhere() -> None:
        instances.append(tm.task_backends["default"])
        instances.append(finished(tm.add.enqueue(2, 2)))

    other = threading.Thread(target=enqueue_elsewhere)
    other.start()
    other.join()
    assert instances[0] is not backend  # the framework's per-thread instances
    assert existing_pool("default") is pool
    assert instances[1].return_value == 4
    assert pool in registry.live_executors()


def test_changing_tasks_setting_resets_the_pool(configure):
    configure(WORKERS=1)
    old = finished(tm.add.enqueue(1, 1))
    old_pool = existing_pool("default")
    configure(WORKERS=2)
    assert existing_pool("default") is None
    with pytest.raises(tm.TaskResultDoesNotExist):
        old.refresh()
    finished(tm.add.enqueue(1, 1))
    assert existing_pool("default") is not old_pool
    assert existing_pool("default").options.workers == 2
    assert old_pool not in registry.live_executors()


def test_shutdown_drains_ready_tasks_and_closes_connections(
    configure, gate, opened_connections
):
    configure(WORKERS=1)
    with database_settings("default", CONN_MAX_AGE=600):
        held = gate()
        blocker = tm.hold.enqueue(held)
        wait_for(lambda: status_of(blocker) == tm.TaskResultStatus.RUNNING, "RUNNING")
        queued = [tm.write_record.enqueue("default", "drained", i) for i in range(3)]
        pool = existing_pool("default")
        tm.GATES[held].set()
        pool.shutdown(wait=True)  # what django_thread.registry does at exit
        assert [status_of(r) for r in queued] == [tm.TaskResultStatus.SUCCESSFUL] * 3
        assert opened_connections.still_open() == 0


def test_shutdown_can_cancel_waiting_tasks(configure, gate):
    configure(WORKERS=1)
    held = gate()
    blocker = tm.hold.enqueue(held)
    wait_for(lambda: status_of(blocker) == tm.TaskResultStatus.RUNNING, "RUNNING")
    queued = tm.add.enqueue(1, 1)
    pool = existing_pool("default")
    tm.GATES[held].set()
    pool.shutdown(wait=True, cancel_futures=True)
    assert status_of(blocker) == tm.TaskResultStatus.SUCCESSFUL
    assert status_of(queued) == tm.TaskResultStatus.READY  # never ran


# --- configuration and checks ------------------------------------------------

BAD_OPTIONS = [
    ({"WROKERS": 2}, "django_thread.E102"),
    ({"WORKERS": 0}, "django_thread.E103"),
    ({"WORKERS": "4"}, "django_thread.E103"),
    ({"WORKERS": True}, "django_thread.E103"),
    ({"QUEUE_WORKERS": {"nope": 1}}, "django_thread.E104"),
    ({"QUEUE_WORKERS": {"emails": 0}}, "django_thread.E104"),
    ({"QUEUE_WORKERS": ["emails"]}, "django_thread.E104"),
    ({"MAX_RESULTS": 0}, "django_thread.E105"),
    ({"RESULT_TTL": -1}, "django_thread.E106"),
    ({"RESULT_TTL": "1h"}, "django_thread.E106"),
    ({"ENQUEUE_ON_COMMIT": "yes"}, "django_thread.E107"),
    ({"DATABASE": "nope"}, "django_thread.E108"),
]


@pytest.mark.parametrize(("options", "check_id"), BAD_OPTIONS)
def test_bad_options_are_check_errors(configure, options, check_id):
    configure(**options)
    messages = list(tm.task_backends["default"].check())
    assert [m.id for m in messages] == [check_id]
    assert all(isinstance(m, Error) and m.hint for m in messages)
    with pytest.raises(ImproperlyConfigured, match=check_id):
        tm.add.enqueue(1, 1)


def test_options_that_are_not_a_dict_are_a_check_error():
    with override_settings(
        TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": ["WORKERS"]}}
    ):
        assert [m.id for m in tm.task_backends["default"].check()] == [
            "django_thread.E101"
        ]


def test_bad_options_fail_manage_py_check(configure):
    # On Django 5.2 the backport registers its check from its AppConfig,
    # and tests.settings does not install it: importing registers it. Not
    # on Django 6, where its check would read a second, never reset, handler.
    if django.VERSION < (6, 0):
        import django_tasks.checks  # noqa: F401
    configure(WORKERS=0)
    with pytest.raises(SystemCheckError, match="django_thread.E103"):
        call_command("check", databases=[])


def test_good_options_pass_the_checks(configure):
    configure(
        WORKERS=2,
        QUEUE_WORKERS={"emails": 1},
        MAX_RESULTS=10,
        RESULT_TTL=1.5,
        ENQUEUE_ON_COMMIT=False,
        DATABASE="postgres",
    )
    assert list(tm.task_backends["default"].check()) == []


def test_app_must_be_installed(configure):
    configure()
    from django.apps import apps

    installed = [
        a for a in (c.name for c in apps.get_app_configs()) if a != "django_thread"
    ]
    with override_settings(INSTALLED_APPS=installed):
        ids = [m.id for m in tm.task_backends["default"].check()]
        assert ids == ["django_thread.E109"]
        with pytest.raises(ImproperlyConfigured, match="INSTALLED_APPS"):
            tm.add.enqueue(1, 1)


def test_import_without_the_tasks_framework_says_what_to_install():
    code = (
        "import sys; sys.modules['django.tasks'] = None; "
        "sys.modules['django_tasks'] = None\n"
        "try:\n    import django_thread.tasks\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.startswith("ImproperlyConfigured")
    assert "pip install django-thread[tasks]" in output


# --- parity with a distributed backend -----------------------------------------


def test_same_results_as_django_tasks_db(configure, tmp_path):
    """The scenario gives the same results here as on django-tasks-db."""
    try:
        import django_tasks_db  # noqa: F401
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI needs django-tasks-db for the parity test: {exc}")
        pytest.skip(f"django-tasks-db is not installed: {exc}")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    completed = subprocess.run(
        [sys.executable, "-m", "tests.tasks_parity", str(tmp_path / "tasks.sqlite3")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    [line] = [
        line
        for line in completed.stdout.splitlines()
        if line.startswith(tasks_parity.PARITY_MARKER)
    ]
    theirs = json.loads(line[len(tasks_parity.PARITY_MARKER) :])

    configure(WORKERS=1)
    ids = tasks_parity.run_scenario()
    backend = tm.task_backends["default"]
    for result_id in ids.values():
        finished(backend.get_result(result_id))
    ours = json.loads(json.dumps(tasks_parity.summarize_all(ids)))
    assert ours == theirs
    assert theirs["echo"]["return_value"]["args"][1] == {"1": "one", "nested": [3, 4]}
    assert theirs["fail"]["errors"] == ["builtins.ValueError"]
