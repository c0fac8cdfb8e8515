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
from django_thread.tasks.results import ResultStore, copy_result, through_json

logger = logging.getLogger("django_thread")


class Job:
    """One enqueued task: its latest result, and its arguments as JSON.

    ``payload`` is None when the arguments are JSON scalars, which the
    round trip would leave as they are (see ``are_json_scalars``). The
    worker that runs the job replaces ``result`` with each new state.
    """

    __slots__ = ("result", "payload")

    def __init__(self, result: TaskResult[Any, Any], payload: str | None) -> None:
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


def _failed(result: TaskResult[Any, Any], exc: BaseException) -> TaskResult[Any, Any]:
    """The FAILED state that follows ``result``, with ``exc`` as its error."""
    exc_type = type(exc)
    error = TaskError(
        exception_class_path=f"{exc_type.__module__}.{exc_type.__qualname__}",
        traceback="".join(format_exception(exc)),
    )
    return copy_result(
        result,
        status=TaskResultStatus.FAILED,
        finished_at=timezone.now(),
        errors=[*result.errors, error],
    )


def _call_task(sender: Any, job: Job) -> bool:
    """Run the task and record its final state in ``job``; True if it succeeded."""
    started = job.result
    task = started.task
    if job.payload is None:
        args, kwargs = started.args, started.kwargs  # scalars, never shared
    else:
        arguments = json.loads(job.payload)  # fresh objects, as a remote worker gets
        args, kwargs = arguments["args"], arguments["kwargs"]
    try:
        if task.takes_context:
            # A copy with lists of its own: the published state is never written.
            context: TaskContext[Any, Any] = TaskContext(
                task_result=copy_result(
                    started,
                    errors=list(started.errors),
                    worker_ids=list(started.worker_ids),
                )
            )
            raw = task.call(context, *args, **kwargs)
        else:
            raw = task.call(*args, **kwargs)
        # Inside the try: a return value no backend could store fails the
        # task, as it does on a database or RQ backend.
        return_value = through_json(raw)
    except BaseException as exc:
        # Even SystemExit or KeyboardInterrupt raised by a task only fails
        # it: they were not meant for this worker thread.
        job.result = _failed(started, exc)
        _send_from_worker(task_finished, sender, job.result)
        return False
    finished = copy_result(
        started, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now()
    )
    set_task_return_value(finished, return_value)
    job.result = finished
    _send_from_worker(task_finished, sender, finished)
    return True


def _start_and_call(sender: Any, job: Job, worker_id: str, store: ResultStore) -> None:
    """The body of a task's unit: publish it as running, then run it."""
    now = timezone.now()
    started = copy_result(
        job.result,
        status=TaskResultStatus.RUNNING,
        started_at=now,
        last_attempted_at=now,
        worker_ids=[*job.result.worker_ids, worker_id],
    )
    job.result = started
    store.publish(started)
    _send_from_worker(task_started, sender, started)
    if not _call_task(sender, job):
        raise _TaskFailed


def run_job(sender: Any, job: Job, worker_id: str, store: ResultStore) -> None:
    """One task, as one unit of work; its final state is published after it.

    Publishing only once the unit's cleanup is done means that a caller who
    sees a finished result also sees the worker's connections released.
    ``run_unit``, not ``unit_of_work``: the worker is ours, so the checks
    for foreign threads (app installed, not inside ``atomic()``) would only
    repeat, per task, what starting the pool already established.
    """
    try:
        run_unit(sender, _start_and_call, (sender, job, worker_id, store))
    except _TaskFailed:
        pass
    except BaseException as exc:
        # The unit itself could not start or finish (a request_started
        # receiver is robust, so this is rare): the task failed to run.
        logger.error(
            "Task %s could not run as a unit of work", job.result.id, exc_info=True
        )
        if not job.result.is_finished:
            job.result = _failed(job.result, exc)
            _send_from_worker(task_finished, sender, job.result)
    store.publish(job.result)
