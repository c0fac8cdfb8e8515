"""Scheduling: priorities, ``run_after``, queues and their workers."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_thread import registry
from django_thread.tasks.pools import existing_pool
from tests.helpers import (
    wait_for,
)
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished, status_of

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


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


def test_a_backlog_left_by_released_workers_uses_several_new_ones(configure, gate):
    configure(WORKERS=2)
    held = [gate() for _ in range(4)]
    busy = [tm.hold.enqueue(name) for name in held[:2]]
    wait_for(
        lambda: all(status_of(r) == tm.TaskResultStatus.RUNNING for r in busy),
        "both workers to be busy",
    )
    backlog = [tm.hold.enqueue(name) for name in held[2:]]
    # Both workers are busy, so they are retired and replaced by one new one;
    # the backlog is more than it can take, so it starts the second.
    assert registry.release_connections(timeout=0.05) is False
    wait_for(
        lambda: all(status_of(r) == tm.TaskResultStatus.RUNNING for r in backlog),
        "both waiting tasks to run at once on new workers",
    )
    for name in held:
        tm.GATES[name].set()
    for result in busy + backlog:
        assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL


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


def test_async_task_runs_on_a_worker(backend):
    assert finished(tm.async_add.enqueue(20, 22)).return_value == 42


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
    assert pool in registry.live_owners()
