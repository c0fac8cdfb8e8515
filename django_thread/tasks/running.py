"""Running one task on a worker: its unit of work, signals and outcome."""

from __future__ import annotations

import json
import logging
from traceback import format_exception
from typing import Any

from django.dispatch import Signal
from django.utils import timezone

from django_thread.internals import set_task_return_value
from django_thread.lifecycle import run_unit, send_robustly
from django_thread.tasks.compat import (
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    task_finished,
    task_started,
)
from django_thread.tasks.results import ResultStore, _update, through_json

logger = logging.getLogger("django_thread")


class _Job:
    """One enqueued task: its result, and its arguments as JSON."""

    __slots__ = ("result", "payload")

    def __init__(self, result: TaskResult[Any, Any], payload: str) -> None:
        self.result = result
        self.payload = payload


class _TaskFailed(Exception):
    """Raised out of the unit of work so that it runs its on-error cleanup."""


def _send_from_worker(
    signal: Signal, sender: Any, result: TaskResult[Any, Any]
) -> None:
    """Send a task signal; a failing receiver is logged, never fatal.

    Failures are sent from inside the ``except`` block, like Django's own
    backends, so that receivers logging ``sys.exc_info()`` see the error.
    """
    send_robustly(
        signal,
        sender,
        f"a task signal for task {result.id}",
        task_result=result,
    )


def _record_failure(result: TaskResult[Any, Any], exc: BaseException) -> None:
    exc_type = type(exc)
    result.errors.append(
        TaskError(
            exception_class_path=f"{exc_type.__module__}.{exc_type.__qualname__}",
            traceback="".join(format_exception(exc)),
        )
    )
    _update(result, status=TaskResultStatus.FAILED, finished_at=timezone.now())


def _call_task(sender: Any, result: TaskResult[Any, Any], payload: str) -> bool:
    """Run the task and record its outcome; True if it succeeded."""
    task = result.task
    arguments = json.loads(payload)  # fresh objects, as a remote worker gets
    try:
        if task.takes_context:
            raw = task.call(
                TaskContext(task_result=result),
                *arguments["args"],
                **arguments["kwargs"],
            )
        else:
            raw = task.call(*arguments["args"], **arguments["kwargs"])
        # Inside the try: a return value no backend could store fails the
        # task, as it does on a database or RQ backend.
        return_value = through_json(raw)
    except BaseException as exc:
        # Even SystemExit or KeyboardInterrupt raised by a task only fails
        # it: they were not meant for this worker thread.
        _record_failure(result, exc)
        _send_from_worker(task_finished, sender, result)
        return False
    _update(result, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now())
    set_task_return_value(result, return_value)
    _send_from_worker(task_finished, sender, result)
    return True


def _start_and_call(
    sender: Any,
    result: TaskResult[Any, Any],
    payload: str,
    worker_id: str,
    store: ResultStore,
) -> None:
    """The body of a task's unit: mark it running, then run it."""
    now = timezone.now()
    _update(
        result,
        status=TaskResultStatus.RUNNING,
        started_at=now,
        last_attempted_at=now,
    )
    result.worker_ids.append(worker_id)
    store.publish(result)
    _send_from_worker(task_started, sender, result)
    if not _call_task(sender, result, payload):
        raise _TaskFailed


def _run_job(sender: Any, job: _Job, worker_id: str, store: ResultStore) -> None:
    """One task, as one unit of work; its final state is published after it.

    Publishing only once the unit's cleanup is done means that a caller who
    sees a finished result also sees the worker's connections released.
    ``run_unit``, not ``unit_of_work``: the worker is ours, so the checks
    for foreign threads (app installed, not inside ``atomic()``) would only
    repeat, per task, what starting the pool already established.
    """
    result = job.result
    try:
        run_unit(
            sender,
            _start_and_call,
            (sender, result, job.payload, worker_id, store),
        )
    except _TaskFailed:
        pass
    except BaseException as exc:
        # The unit itself could not start or finish (a request_started
        # receiver is robust, so this is rare): the task failed to run.
        logger.error(
            "Task %s could not run as a unit of work", result.id, exc_info=True
        )
        if not result.is_finished:
            _record_failure(result, exc)
            _send_from_worker(task_finished, sender, result)
    store.publish(result)
