"""Results: their states, their errors, and how long they are kept."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from django_thread.tasks.pools import existing_pool
from tests.helpers import (
    wait_for,
)
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished, status_of

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


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


def test_changing_a_fetched_result_does_not_change_the_stored_one(backend):
    returned = tm.add.enqueue(1, 2)
    returned.errors.append("not an error")
    returned.worker_ids.append("not a worker")
    done = finished(tm.add.enqueue(3, 4))
    fetched = tm.add.get_result(done.id)
    fetched.worker_ids.append("not a worker")
    fetched.errors.append("not an error")
    again = tm.add.get_result(done.id)
    assert len(again.worker_ids) == 1 and again.errors == []
    assert finished(returned).errors == [] and len(returned.worker_ids) == 1


def test_unknown_result_id_raises(backend):
    with pytest.raises(tm.TaskResultDoesNotExist):
        backend.get_result("no-such-id")
    with pytest.raises(tm.TaskResultDoesNotExist):
        tm.add.get_result("no-such-id")


@pytest.mark.parametrize("pool_started", [False, True], ids=["no-pool", "pool"])
def test_a_missing_result_says_why_it_may_be_missing(configure, pool_started):
    configure(MAX_RESULTS=7, RESULT_TTL=60)
    if pool_started:
        finished(tm.add.enqueue(1, 1))
    assert (existing_pool("default") is not None) is pool_started
    with pytest.raises(tm.TaskResultDoesNotExist) as missing:
        tm.add.get_result("no-such-id")
    message = str(missing.value)
    assert "'no-such-id'" in message
    assert f"process {os.getpid()}" in message
    assert "only in the memory of the process that enqueued the task" in message
    assert "RESULT_TTL=60 seconds" in message
    assert "MAX_RESULTS=7" in message
    assert "until the commit" in message


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
