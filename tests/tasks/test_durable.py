"""DURABLE: tasks are django-tasks-db rows, run by this process's workers.

In-process behaviour on every database: the outbox, results from the row,
signals, priority and queues, the wake after commit, the idle query rate,
and recovery of rows whose worker's lease lapsed. Real processes (kill -9,
fork, exit, db_worker) are in tests/test_durable_processes.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.db.backends.signals import connection_created
from django.test import override_settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from django_thread.models import WorkerLease
from django_thread.tasks import ThreadPoolBackend
from django_thread.tasks.durable import DurableBackend
from django_thread.tasks.durable_checks import check_durable_tables
from django_thread.tasks.durable_engine import WORKER_ID_PREFIX, WorkerLost
from testproject.jobs.models import Record
from tests.tasks import tasks as tm
from tests.tasks.helpers import BACKEND, finished, recorded_signals

pytestmark = pytest.mark.django_db(transaction=True)


def durable_setting(database: str = "default", **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": BACKEND,
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"DURABLE": True, "DATABASE": database, **options},
        }
    }


@pytest.fixture
def durable() -> Iterator[Callable[..., DurableBackend]]:
    with contextlib.ExitStack() as stack:

        def apply(database: str = "default", **options: Any) -> DurableBackend:
            stack.enter_context(
                override_settings(TASKS=durable_setting(database, **options))
            )
            backend = tm.task_backends["default"]
            assert isinstance(backend, DurableBackend)
            return backend

        yield apply


def rows(alias: str) -> Any:
    return DBTaskResult.objects.using(alias)


def test_durable_option_builds_a_database_backend(durable):
    backend = durable()
    from django_tasks_db.backend import DatabaseBackend

    # db_worker and prune_db_task_results accept only DatabaseBackend aliases.
    assert isinstance(backend, ThreadPoolBackend)
    assert isinstance(backend, DatabaseBackend)
    with override_settings(TASKS={"default": {"BACKEND": BACKEND}}):
        assert not isinstance(tm.task_backends["default"], DurableBackend)


def test_task_runs_and_its_result_is_read_from_the_row(alias, durable):
    durable(alias)
    with recorded_signals() as events:
        result = tm.write_record.enqueue(alias, "durable")
        assert rows(alias).filter(id=result.id).exists()
        assert finished(result).return_value is not None
        failed = finished(tm.fail.enqueue("boom"))
    assert result.status == tm.TaskResultStatus.SUCCESSFUL
    assert result.worker_ids[0].startswith(WORKER_ID_PREFIX)
    assert Record.objects.using(alias).filter(name="durable").count() == 1
    assert failed.status == tm.TaskResultStatus.FAILED
    assert failed.errors[0].exception_class_path == "builtins.ValueError"
    assert "boom" in failed.errors[0].traceback
    # The row is the result: any process reads it.
    row = rows(alias).get(id=result.id)
    assert row.status == "SUCCESSFUL" and row.finished_at is not None
    names = [(name, status) for name, _, rid, status, _ in events if rid == result.id]
    assert names == [
        ("enqueued", "READY"),
        ("started", "RUNNING"),
        ("finished", "SUCCESSFUL"),
    ]
    senders = {sender for _, sender, *_ in events}
    assert senders == {DurableBackend}


def test_get_result_of_unknown_id_raises(durable):
    backend = durable()
    with pytest.raises(tm.TaskResultDoesNotExist):
        backend.get_result("not-a-uuid")
    with pytest.raises(tm.TaskResultDoesNotExist):
        backend.get_result("00000000-0000-0000-0000-000000000000")


def test_aenqueue_and_aget_result_use_the_row(durable):
    from asgiref.sync import async_to_sync

    backend = durable()
    # async_to_sync: their ORM calls run in this thread, on its connection.
    result = async_to_sync(tm.add.aenqueue)(2, 3)
    finished(result)
    fetched = async_to_sync(backend.aget_result)(result.id)
    assert fetched.return_value == 5


def test_outbox_rollback_never_runs_commit_runs(alias, durable):
    durable(alias, POLL_INTERVAL=0.1)
    with transaction.atomic(using=alias):
        kept = tm.write_record.enqueue(alias, "kept")
        try:
            with transaction.atomic(using=alias):
                dropped = tm.write_record.enqueue(alias, "dropped")
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
        # Not visible to the workers until the commit.
        time.sleep(0.3)
        assert kept.status == tm.TaskResultStatus.READY
    finished(kept)
    time.sleep(0.3)  # three polls: a dropped row would have run by now
    assert not rows(alias).filter(id=dropped.id).exists()
    assert not Record.objects.using(alias).filter(name="dropped").exists()
    assert Record.objects.using(alias).filter(name="kept").count() == 1


def test_enqueue_in_this_process_starts_without_waiting_for_a_poll(alias, durable):
    durable(alias, POLL_INTERVAL=30)
    finished(tm.add.enqueue(0, 0))  # workers started, first poll done
    start = time.monotonic()
    with transaction.atomic(using=alias):
        result = tm.add.enqueue(1, 2)
    assert finished(result, timeout=5).return_value == 3
    assert time.monotonic() - start < 2


def test_priority_queue_and_run_after_are_honoured(alias, durable):
    durable(alias, WORKERS=1, QUEUE_WORKERS={"emails": 0}, POLL_INTERVAL=0.1)
    later = timezone.now() + timedelta(seconds=1.5)
    with transaction.atomic(using=alias):  # all committed at once
        low = tm.record_order.using(priority=-5).enqueue("low")
        high = tm.record_order.using(priority=5).enqueue("high")
        deferred = tm.record_order.using(run_after=later).enqueue("deferred")
        other_queue = tm.add.using(queue_name="emails").enqueue(1, 1)
    finished(low)
    assert finished(high).finished_at <= low.started_at
    assert finished(deferred, timeout=5).started_at >= later
    # 0 workers for "emails": left to other processes (db_worker).
    assert rows(alias).get(id=other_queue.id).status == "READY"


def test_idle_process_costs_one_query_per_poll(alias, durable):
    """Idle: one EXISTS per POLL_INTERVAL, whatever the queues and workers."""
    queries: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append(sql)
        return execute(sql, params, many, context)

    def instrument(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(count)

    connection_created.connect(instrument)
    try:
        durable(alias, WORKERS=3, POLL_INTERVAL=0.1)
        finished(tm.add.enqueue(1, 1))
        time.sleep(0.3)  # the heartbeat after the task is due within LEASE/3
        queries.clear()
        time.sleep(1.0)
    finally:
        connection_created.disconnect(instrument)
    assert 6 <= len(queries) <= 12, queries
    # Reads only: no claim transaction, no lock, no heartbeat write.
    for sql in queries:
        assert sql.upper().startswith("SELECT"), sql
        assert "FOR UPDATE" not in sql.upper(), sql


def test_task_of_a_dead_worker_runs_again_after_its_lease(alias, durable):
    durable(alias, LEASE=3, POLL_INTERVAL=0.1)
    dead = WORKER_ID_PREFIX + "dead"
    WorkerLease.objects.using(alias).create(
        worker_id=dead, host="gone", pid=1, expires_at=timezone.now()
    )
    with transaction.atomic(using=alias):
        result = tm.write_record.enqueue(alias, "recovered")
        rows(alias).filter(id=result.id).update(status="RUNNING", worker_ids=[dead])
    finished(result, timeout=10)
    assert result.status == tm.TaskResultStatus.SUCCESSFUL
    assert result.worker_ids[0] == dead and len(result.worker_ids) == 2
    assert Record.objects.using(alias).filter(name="recovered").count() == 1


def test_task_of_a_live_worker_is_never_started_twice(alias, durable):
    durable(alias, LEASE=3, POLL_INTERVAL=0.1)
    alive = WORKER_ID_PREFIX + "alive"
    WorkerLease.objects.using(alias).create(
        worker_id=alive,
        host="here",
        pid=1,
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    with transaction.atomic(using=alias):
        ours = tm.write_record.enqueue(alias, "live")
        theirs = tm.add.enqueue(1, 1)  # db_worker's ids are not ours: left alone
        rows(alias).filter(id=ours.id).update(status="RUNNING", worker_ids=[alive])
        rows(alias).filter(id=theirs.id).update(
            status="RUNNING", worker_ids=["db-worker-x"]
        )
    probe = finished(tm.add.enqueue(2, 2))
    time.sleep(3.5)  # more than LEASE: a recovery pass has run
    assert probe.status == tm.TaskResultStatus.SUCCESSFUL
    assert rows(alias).get(id=ours.id).worker_ids == [alive]
    assert rows(alias).get(id=theirs.id).status == "RUNNING"
    assert not Record.objects.using(alias).filter(name="live").exists()


def test_task_lost_max_attempts_times_is_marked_failed(alias, durable):
    durable(alias, LEASE=3, POLL_INTERVAL=0.1, MAX_ATTEMPTS=2)
    lost = [WORKER_ID_PREFIX + "one", WORKER_ID_PREFIX + "two"]
    with transaction.atomic(using=alias):
        result = tm.write_record.enqueue(alias, "never")
        rows(alias).filter(id=result.id).update(status="RUNNING", worker_ids=lost)
    finished(result, timeout=10)
    assert result.status == tm.TaskResultStatus.FAILED
    error = result.errors[0]
    assert error.exception_class_path == (
        f"{WorkerLost.__module__}.{WorkerLost.__qualname__}"
    )
    assert "MAX_ATTEMPTS=2" in error.traceback
    assert not Record.objects.using(alias).filter(name="never").exists()


def transactions_open_longer_than(alias: str, seconds: float) -> int:
    """Sessions on this test database with a transaction open for ``seconds``."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND xact_start "
                "< clock_timestamp() - make_interval(secs => %s)",
                [seconds],
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM information_schema.innodb_trx AS t JOIN "
                "information_schema.processlist AS p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.db = DATABASE() AND p.id <> CONNECTION_ID() AND "
                "t.trx_started < NOW() - INTERVAL %s SECOND",
                [seconds],
            )
        return int(cursor.fetchone()[0])


def test_claims_and_heartbeats_leave_no_transaction_open(server_alias, durable):
    """The poller's claims, leases and recovery commit at once, busy or idle."""
    alias = server_alias
    # The probe sees a transaction left open (on a thread of its own).
    opened = threading.Event()
    release = threading.Event()

    def hold_a_transaction() -> None:
        with transaction.atomic(using=alias):
            Record.objects.using(alias).create(name="held", value=1)
            opened.set()
            release.wait(10)
        connections[alias].close()

    holder = threading.Thread(target=hold_a_transaction)
    holder.start()
    try:
        assert opened.wait(10)
        time.sleep(2.5)  # MariaDB's trx_started has whole seconds
        assert transactions_open_longer_than(alias, 1) == 1
    finally:
        release.set()
        holder.join()
    durable(alias, WORKERS=2, LEASE=3, POLL_INTERVAL=0.05)
    with transaction.atomic(using=alias):
        results = [tm.add.enqueue(n, n) for n in range(40)]
    seen = []
    deadline = time.monotonic() + 3  # busy, then idle: 60 polls, a lease renewal
    while time.monotonic() < deadline:
        seen.append(transactions_open_longer_than(alias, 1))
        time.sleep(0.1)
    for result in results:
        assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL
    assert set(seen) == {0}, seen


def test_queue_with_zero_workers_runs_nothing_here(durable):
    durable(QUEUE_WORKERS={"emails": 0}, POLL_INTERVAL=0.1)
    result = tm.add.using(queue_name="emails").enqueue(1, 1)
    finished(tm.add.enqueue(2, 2))
    time.sleep(0.3)
    assert rows("default").get(id=result.id).status == "READY"


def check_ids(**options: Any) -> list[str]:
    with override_settings(TASKS=durable_setting(**options)):
        return [message.id for message in tm.task_backends["default"].check()]


def test_checks_of_durable_options():
    assert check_ids() == []
    assert check_ids(LEASE=1) == ["django_thread.E113"]
    assert check_ids(POLL_INTERVAL=0) == ["django_thread.E112"]
    assert check_ids(MAX_ATTEMPTS=0) == ["django_thread.E114"]
    assert check_ids(RESULT_TTL=10) == ["django_thread.E117"]
    assert check_ids(ENQUEUE_ON_COMMIT=True) == ["django_thread.E117"]
    assert check_ids(DATABASE="nowhere") == ["django_thread.E108"]
    assert check_ids(QUEUE_WORKERS={"emails": 0}, WORKERS=0) == []
    with override_settings(
        TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": {"LEASE": 5}}}
    ):
        assert [m.id for m in tm.task_backends["default"].check()] == [
            "django_thread.E116"
        ]


def test_sqlite_with_several_durable_workers_gets_w101():
    db_options = connections["default"].settings_dict["OPTIONS"]
    saved = dict(db_options)
    db_options.clear()  # neither a timeout nor IMMEDIATE
    try:
        assert "django_thread.W101" in check_ids(WORKERS=2)
        assert "django_thread.W101" not in check_ids(WORKERS=0)
    finally:
        db_options.update(saved)


def test_durable_without_django_tasks_db_app_is_an_error(settings):
    settings.INSTALLED_APPS = [
        app for app in settings.INSTALLED_APPS if app != "django_tasks_db"
    ]
    assert check_ids() == ["django_thread.E115"]
    with override_settings(TASKS=durable_setting()):
        with pytest.raises(Exception, match="django_thread.E115|INSTALLED_APPS"):
            tm.add.enqueue(1, 1)


def test_check_reports_missing_tables_through_manage_py(durable):
    durable()
    with connections["default"].schema_editor() as editor:
        editor.delete_model(WorkerLease)
    try:
        messages = check_durable_tables(databases=["default"])
        assert [m.id for m in messages] == ["django_thread.W102"]
        assert check_durable_tables(databases=None) == []
    finally:
        with connections["default"].schema_editor() as editor:
            editor.create_model(WorkerLease)
    call_command("check", databases=["default"])  # tables back: no warning


def test_prune_db_task_results_prunes_durable_rows(durable):
    durable(POLL_INTERVAL=0.1)
    old = finished(tm.add.enqueue(1, 1))
    waiting = tm.add.using(queue_name="emails").enqueue(2, 2)
    rows("default").filter(id=old.id).update(
        finished_at=timezone.now() - timedelta(days=30)
    )
    call_command("prune_db_task_results", "--backend=default", "--queue-name=*")
    assert not rows("default").filter(id=old.id).exists()
    assert rows("default").filter(id=waiting.id).exists()


def test_bad_durable_options_fail_manage_py_check():
    import django
    from django.core.management.base import SystemCheckError

    if django.VERSION < (6, 0):  # as in test_checks: the backport's check
        import django_tasks.checks  # noqa: F401
    with override_settings(TASKS=durable_setting(RESULT_TTL=10, LEASE=1)):
        with pytest.raises(SystemCheckError) as raised:
            call_command("check", databases=[])
    assert "django_thread.E117" in str(raised.value)
    assert "django_thread.E113" in str(raised.value)
