"""A backend for Django's Tasks framework that runs tasks on in-process workers.

``django.tasks`` (Django >= 6.0, or the ``django-tasks`` backport on 5.2)
ships only an ``ImmediateBackend``, which runs the task inside the caller,
and a ``DummyBackend``, which never runs it. :class:`ThreadPoolBackend`
runs tasks off the request thread, on worker threads of this process, with
the same guarantees as every django_thread unit of work: each task runs
between ``request_started`` and ``request_finished``, so ``CONN_MAX_AGE``,
``CONN_HEALTH_CHECKS`` and broken connections are handled as in a request,
a transaction the task leaked is rolled back, and its connections are
closed when it fails.

It is meant as the first backend of a project, the one it outgrows: task
code written against it must keep working when ``TASKS`` points at a
database, RQ or Celery backend. So it behaves like a distributed backend
where that matters:

- arguments are serialized to JSON in the caller and deserialized by the
  worker, return values the other way (tuples arrive as lists, integer
  dict keys as strings, a ``datetime`` is refused), so a task never works
  here only because it received a live Python object;
- each task runs in a fresh ``contextvars`` context, with the default
  language and time zone: a worker process would not see the caller's;
- enqueueing inside ``transaction.atomic()`` is deferred until the commit
  (``ENQUEUE_ON_COMMIT``), so a task never reads rows its caller has not
  committed, a race a distributed worker would hit at random.

Results live in this process's memory, bounded in count and age, and die
with it; nothing is retried after a restart.

``django.tasks.task_backends`` creates one backend instance per thread and
async context, so the worker pools cannot live on the instance: they live
in a module-level registry keyed by backend alias, reset when the ``TASKS``
setting changes, and shut down at interpreter exit by
:mod:`django_thread.registry` like every django_thread executor.
"""

from __future__ import annotations

import contextvars
import dataclasses
import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime
from traceback import format_exception
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from django_thread import registry
from django_thread.lifecycle import (
    close_thread_connections,
    ensure_app_installed,
    run_unit,
    send_robustly,
)

try:  # Django >= 6.0 ships the framework.
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:
    try:  # Django 5.2 with the backport; drop this branch with Django 5.2.
        from django_tasks.backends.base import (  # type: ignore[no-redef]
            BaseTaskBackend,
        )
        from django_tasks.base import (  # type: ignore[no-redef,assignment]
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef,assignment]
            TaskResultDoesNotExist,
        )
        from django_tasks.signals import (  # type: ignore[no-redef,assignment]
            task_enqueued,
            task_finished,
            task_started,
        )
        from django_tasks.utils import normalize_json  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImproperlyConfigured(
            "django_thread.tasks needs Django's Tasks framework: use Django "
            ">= 6.0, or on Django 5.2 install the django-tasks backport with "
            "`pip install django-thread[tasks]` and add 'django_tasks' to "
            "INSTALLED_APPS."
        ) from exc

__all__ = ["ThreadPoolBackend", "reset_pools"]

logger = logging.getLogger("django_thread")

#: OPTIONS keys, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "WORKERS": 4,
    "QUEUE_WORKERS": {},
    "MAX_RESULTS": 1000,
    "RESULT_TTL": 3600,
    "ENQUEUE_ON_COMMIT": True,
    "DATABASE": "default",
}

E_OPTIONS_TYPE = "django_thread.E101"
E_UNKNOWN_OPTION = "django_thread.E102"
E_WORKERS = "django_thread.E103"
E_QUEUE_WORKERS = "django_thread.E104"
E_MAX_RESULTS = "django_thread.E105"
E_RESULT_TTL = "django_thread.E106"
E_ENQUEUE_ON_COMMIT = "django_thread.E107"
E_DATABASE = "django_thread.E108"
E_APP_NOT_INSTALLED = "django_thread.E109"

#: How long a reset waits for a running task before giving up on its worker.
RESET_JOIN_TIMEOUT = 10.0
#: The longest an idle worker sleeps without re-reading the clock: deferred
#: tasks are due by wall-clock time, which can jump.
MAX_IDLE_WAIT = 60.0


# --- Options --------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def option_errors(options: Any, queues: Iterable[str]) -> list[checks.Error]:
    """Every problem with a backend's OPTIONS, as system-check errors.

    The one place options are validated: ``check()`` reports these at
    startup, and the pool refuses to start on them, in case checks were
    skipped.
    """
    if not isinstance(options, Mapping):
        return [
            checks.Error(
                f"OPTIONS must be a dict, not {type(options).__name__}.",
                hint="Known keys: " + ", ".join(DEFAULT_OPTIONS) + ".",
                id=E_OPTIONS_TYPE,
            )
        ]
    errors = [
        checks.Error(
            f"Unknown OPTIONS key {key!r}: ThreadPoolBackend would ignore it.",
            hint="Known keys: " + ", ".join(DEFAULT_OPTIONS) + ".",
            id=E_UNKNOWN_OPTION,
        )
        for key in options
        if key not in DEFAULT_OPTIONS
    ]
    values = {**DEFAULT_OPTIONS, **options}
    if not _is_int(values["WORKERS"]) or values["WORKERS"] < 1:
        errors.append(
            checks.Error(
                f"WORKERS must be an int of at least 1, not {values['WORKERS']!r}.",
                hint="Set OPTIONS['WORKERS'] to the worker threads per queue.",
                id=E_WORKERS,
            )
        )
    queue_workers = values["QUEUE_WORKERS"]
    known_queues = set(queues)
    if not isinstance(queue_workers, Mapping):
        errors.append(
            checks.Error(
                f"QUEUE_WORKERS must be a dict, not {type(queue_workers).__name__}.",
                hint="Map queue names to worker counts: {'emails': 1}.",
                id=E_QUEUE_WORKERS,
            )
        )
    else:
        for name, count in queue_workers.items():
            if known_queues and name not in known_queues:
                errors.append(
                    checks.Error(
                        f"QUEUE_WORKERS names {name!r}, which is not in QUEUES.",
                        hint="QUEUES: " + ", ".join(sorted(known_queues)) + ".",
                        id=E_QUEUE_WORKERS,
                    )
                )
            if not _is_int(count) or count < 1:
                errors.append(
                    checks.Error(
                        f"QUEUE_WORKERS[{name!r}] must be an int of at least 1, "
                        f"not {count!r}.",
                        hint="Give each queue one worker or more.",
                        id=E_QUEUE_WORKERS,
                    )
                )
    if not _is_int(values["MAX_RESULTS"]) or values["MAX_RESULTS"] < 1:
        errors.append(
            checks.Error(
                f"MAX_RESULTS must be an int of at least 1, not "
                f"{values['MAX_RESULTS']!r}.",
                hint="It bounds how many finished results are kept in memory.",
                id=E_MAX_RESULTS,
            )
        )
    ttl = values["RESULT_TTL"]
    if not (_is_int(ttl) or isinstance(ttl, float)) or not ttl > 0:
        errors.append(
            checks.Error(
                f"RESULT_TTL must be a number of seconds above 0, not {ttl!r}.",
                hint="It bounds how long a finished result is kept in memory.",
                id=E_RESULT_TTL,
            )
        )
    if not isinstance(values["ENQUEUE_ON_COMMIT"], bool):
        errors.append(
            checks.Error(
                f"ENQUEUE_ON_COMMIT must be a bool, not "
                f"{values['ENQUEUE_ON_COMMIT']!r}.",
                hint="Set it to True (the default) or False.",
                id=E_ENQUEUE_ON_COMMIT,
            )
        )
    database = values["DATABASE"]
    if not isinstance(database, str) or database not in django_settings.DATABASES:
        errors.append(
            checks.Error(
                f"DATABASE must name an alias in DATABASES, not {database!r}.",
                hint="Aliases: " + ", ".join(django_settings.DATABASES) + ".",
                id=E_DATABASE,
            )
        )
    return errors


@dataclasses.dataclass(frozen=True)
class PoolOptions:
    """A backend's OPTIONS, validated, with defaults filled in."""

    workers: int
    queue_workers: dict[str, int]
    max_results: int
    result_ttl: float
    enqueue_on_commit: bool
    database: str

    @classmethod
    def from_params(cls, options: Any, queues: Iterable[str]) -> PoolOptions:
        errors = option_errors(options, queues)
        if errors:
            raise ImproperlyConfigured(
                "Invalid ThreadPoolBackend OPTIONS: "
                + " ".join(f"{error.msg} ({error.id})" for error in errors)
            )
        values = {**DEFAULT_OPTIONS, **options}
        return cls(
            workers=values["WORKERS"],
            queue_workers=dict(values["QUEUE_WORKERS"]),
            max_results=values["MAX_RESULTS"],
            result_ttl=float(values["RESULT_TTL"]),
            enqueue_on_commit=values["ENQUEUE_ON_COMMIT"],
            database=values["DATABASE"],
        )

    def workers_for(self, queue_name: str) -> int:
        return self.queue_workers.get(queue_name, self.workers)


# --- Results --------------------------------------------------------------


def new_id() -> str:
    """A random 32-character id, like the ids of Django's own backends.

    Not ``get_random_string(32)``, which they use: it reads the system's
    random source once per character, and cost more than running a
    trivial task. One ``uuid4`` is a single read of the same source.
    """
    return uuid.uuid4().hex


def through_json(value: Any) -> Any:
    """What a value looks like after a trip through a distributed queue.

    ``normalize_json`` is the framework's own step (and raises its
    ``TypeError``/``ValueError`` for what it refuses); the JSON round trip
    adds what a JSON column or message body does on top of it: dict keys
    become strings, and NaN and infinities are refused as PostgreSQL's
    ``jsonb`` refuses them.
    """
    return json.loads(json.dumps(normalize_json(value), allow_nan=False))


#: Every field of a result, ``init=False`` ones included.
_RESULT_FIELDS = tuple(field.name for field in dataclasses.fields(TaskResult))


def _copy_result(result: TaskResult) -> TaskResult:
    """An independent copy, so that no caller sees a worker's later writes.

    Field by field: ``dataclasses.replace`` would drop the framework's
    private ``_return_value`` (``init=False``) and re-run ``__post_init__``,
    and ``copy.copy`` goes through pickling's protocol; both cost more than
    running a trivial task. The two lists are the only fields a worker
    mutates in place, so they are copied too. Django's and the backport's
    own backends write ``_return_value`` the same way. Checked on Django
    5.2 with django-tasks 0.12 and on Django 6.0 and 6.1.
    """
    duplicate = object.__new__(type(result))
    for name in _RESULT_FIELDS:
        object.__setattr__(duplicate, name, getattr(result, name))
    _update(duplicate, errors=list(result.errors), worker_ids=list(result.worker_ids))
    return duplicate


def _update(result: TaskResult, **changes: Any) -> None:
    """Write to a frozen ``TaskResult``, as the framework's own backends do.

    Only the worker that owns the result writes, and only before it is
    published again, so readers never see a half-written result.
    """
    for name, value in changes.items():
        object.__setattr__(result, name, value)


class ResultStore:
    """Published results, by id; finished ones bounded in count and age.

    Results that are waiting or running are never evicted: a caller polling
    one must not lose it. Finished ones are kept in finishing order and
    dropped oldest first once there are more than ``max_results`` of them,
    or once they are older than ``ttl`` seconds.
    """

    def __init__(self, max_results: int, ttl: float) -> None:
        self.max_results = max_results
        self.ttl = ttl
        self._lock = threading.Lock()
        self._unfinished: dict[str, TaskResult] = {}
        self._finished: OrderedDict[str, tuple[TaskResult, float]] = OrderedDict()

    def publish(self, result: TaskResult) -> None:
        snapshot = _copy_result(result)
        with self._lock:
            if snapshot.is_finished:
                self._unfinished.pop(snapshot.id, None)
                self._finished[snapshot.id] = (snapshot, time.monotonic())
                self._finished.move_to_end(snapshot.id)
                self._evict()
            else:
                self._unfinished[snapshot.id] = snapshot

    def discard(self, result_id: str) -> None:
        with self._lock:
            self._unfinished.pop(result_id, None)
            self._finished.pop(result_id, None)

    def get(self, result_id: str) -> TaskResult:
        with self._lock:
            self._evict()
            snapshot = self._unfinished.get(result_id)
            if snapshot is None:
                finished = self._finished.get(result_id)
                if finished is None:
                    raise TaskResultDoesNotExist(result_id)
                snapshot = finished[0]
        return _copy_result(snapshot)

    def _evict(self) -> None:
        while len(self._finished) > self.max_results:
            self._finished.popitem(last=False)
        expired_before = time.monotonic() - self.ttl
        while self._finished:
            _, finished_at = next(iter(self._finished.values()))
            if finished_at > expired_before:
                break
            self._finished.popitem(last=False)


# --- Running one task -----------------------------------------------------


class _Job:
    """One enqueued task: its result, and its arguments as JSON."""

    __slots__ = ("result", "payload")

    def __init__(self, result: TaskResult, payload: str) -> None:
        self.result = result
        self.payload = payload


class _TaskFailed(Exception):
    """Raised out of the unit of work so that it runs its on-error cleanup."""


def _send_from_worker(signal: Signal, result: TaskResult) -> None:
    """Send a task signal; a failing receiver is logged, never fatal.

    Failures are sent from inside the ``except`` block, like Django's own
    backends, so that receivers logging ``sys.exc_info()`` see the error.
    """
    send_robustly(
        signal,
        ThreadPoolBackend,
        f"a task signal for task {result.id}",
        task_result=result,
    )


def _record_failure(result: TaskResult, exc: BaseException) -> None:
    exc_type = type(exc)
    result.errors.append(
        TaskError(
            exception_class_path=f"{exc_type.__module__}.{exc_type.__qualname__}",
            traceback="".join(format_exception(exc)),
        )
    )
    _update(result, status=TaskResultStatus.FAILED, finished_at=timezone.now())


def _call_task(result: TaskResult, payload: str) -> bool:
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
        _send_from_worker(task_finished, result)
        return False
    _update(result, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now())
    object.__setattr__(result, "_return_value", return_value)  # see _copy_result
    _send_from_worker(task_finished, result)
    return True


def _start_and_call(
    result: TaskResult, payload: str, worker_id: str, store: ResultStore
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
    _send_from_worker(task_started, result)
    if not _call_task(result, payload):
        raise _TaskFailed


def _run_job(job: _Job, worker_id: str, store: ResultStore) -> None:
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
            ThreadPoolBackend,
            _start_and_call,
            (result, job.payload, worker_id, store),
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
            _send_from_worker(task_finished, result)
    store.publish(result)


# --- Workers --------------------------------------------------------------


class TaskQueue:
    """One named queue: its waiting tasks and the worker threads serving it.

    Waiting tasks sit in two heaps under one condition: ``ready`` by
    (-priority, arrival) so that higher priorities run first and equal ones
    in order, and ``deferred`` by ``run_after``. An idle worker sleeps on the
    condition until it is notified or the earliest deferred task is due;
    nothing polls. Workers are started as tasks arrive, up to the queue's
    count, and are daemon threads: exit runs through :meth:`Pool.shutdown`.
    """

    def __init__(self, pool: Pool, name: str, max_workers: int) -> None:
        self.pool = pool
        self.name = name
        self.max_workers = max_workers
        self._condition = threading.Condition()
        self._ready: list[tuple[int, int, _Job]] = []
        self._deferred: list[tuple[datetime, int, _Job]] = []
        self._arrivals = itertools.count()
        self._threads: list[threading.Thread] = []
        self._waiting = 0
        self._closing = False

    def put(self, job: _Job) -> None:
        task = job.result.task
        with self._condition:
            if self._closing:
                raise RuntimeError(
                    f"The task queue {self.name!r} of backend {self.pool.alias!r} "
                    "is shut down."
                )
            arrival = next(self._arrivals)
            if task.run_after is not None and task.run_after > timezone.now():
                heapq.heappush(self._deferred, (task.run_after, arrival, job))
            else:
                heapq.heappush(self._ready, (-task.priority, arrival, job))
            self._wake_or_start_worker()

    def _wake_or_start_worker(self) -> None:
        """Make sure some worker will take the new work; call with the lock held.

        Waiting workers are woken; a new one is started while there is more
        ready work than waiting workers to take it, and always when there is
        none at all, since a deferred task needs someone to wait for it. A
        notification that reaches a worker whose wait just timed out is not
        lost: every worker looks at the heaps before waiting again.
        """
        self._condition.notify()
        if len(self._threads) < self.max_workers and (
            len(self._ready) > self._waiting or not self._threads
        ):
            self._start_worker()

    def _start_worker(self) -> None:
        worker_id = new_id()
        thread = threading.Thread(
            name=f"django_thread.tasks[{self.pool.alias}/{self.name}]-{len(self._threads)}",
            target=self._work,
            args=(worker_id,),
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)
        logger.debug("Started task worker %s as %s", worker_id, thread.name)

    def _next_job(self) -> _Job | None:
        """The next task to run, or None when the queue is closing and drained."""
        with self._condition:
            while True:
                now = timezone.now()
                while self._deferred and self._deferred[0][0] <= now:
                    run_after, arrival, job = heapq.heappop(self._deferred)
                    heapq.heappush(
                        self._ready, (-job.result.task.priority, arrival, job)
                    )
                if self._ready:
                    job = heapq.heappop(self._ready)[-1]
                    if self._ready:
                        # More is ready than this worker takes: deferred
                        # tasks fall due together without any put() to
                        # wake or start the other workers.
                        self._wake_or_start_worker()
                    return job
                if self._closing:
                    return None
                timeout = MAX_IDLE_WAIT
                if self._deferred:
                    due_in = (self._deferred[0][0] - now).total_seconds()
                    timeout = min(max(due_in, 0.0), MAX_IDLE_WAIT)
                self._waiting += 1
                try:
                    self._condition.wait(timeout)
                finally:
                    self._waiting -= 1

    def _work(self, worker_id: str) -> None:
        """The worker loop; whatever ends it, the worker's connections close."""
        try:
            while True:
                job = self._next_job()
                if job is None:
                    return
                # A fresh context per task, as a worker process would have:
                # nothing leaks from the caller or from the previous task.
                contextvars.Context().run(_run_job, job, worker_id, self.pool.results)
                del job
        except BaseException:
            logger.critical("Task worker %s crashed", worker_id, exc_info=True)
        finally:
            close_thread_connections()

    def close(self, cancel: bool) -> list[_Job]:
        """Stop taking tasks; return the ones that will now never run."""
        with self._condition:
            self._closing = True
            dropped = [job for _, _, job in self._deferred]
            self._deferred.clear()
            if cancel:
                dropped += [job for _, _, job in self._ready]
                self._ready.clear()
            self._condition.notify_all()
        return dropped

    def join(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            remaining = (
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            thread.join(remaining)
            if thread.is_alive():
                logger.warning(
                    "Task worker %s is still running a task; leaving it behind",
                    thread.name,
                )


class Pool:
    """The process-wide workers and results of one backend alias."""

    def __init__(self, alias: str, options: PoolOptions) -> None:
        self.alias = alias
        self.options = options
        self.results = ResultStore(options.max_results, options.result_ttl)
        self._queues: dict[str, TaskQueue] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job: _Job) -> None:
        """Publish the task as enqueued, tell receivers, and queue it."""
        if registry.exiting():
            raise RuntimeError("cannot enqueue tasks after interpreter shutdown")
        result = job.result
        _update(result, enqueued_at=timezone.now())
        self.results.publish(result)
        try:
            task_enqueued.send(sender=ThreadPoolBackend, task_result=result)
            self._queue(result.task.queue_name).put(job)
        except BaseException:
            # As with Django's own backends, a failing task_enqueued receiver
            # fails the enqueue: the task will not run, so forget it.
            self.results.discard(result.id)
            raise

    def _queue(self, name: str) -> TaskQueue:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"The task backend {self.alias!r} is shut down.")
            queue = self._queues.get(name)
            if queue is None:
                queue = TaskQueue(self, name, self.options.workers_for(name))
                self._queues[name] = queue
            return queue

    def shutdown(
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Drain (or cancel) waiting tasks, then let the workers close.

        Deferred tasks that are not due yet never run: waiting for them
        would hold the process for as long as their ``run_after`` says.
        The signature matches ``Executor.shutdown``, which is how
        :func:`django_thread.registry.shutdown_all` calls it at exit.
        """
        with self._lock:
            self._closed = True
            queues = list(self._queues.values())
        dropped = [job for queue in queues for job in queue.close(cancel_futures)]
        if dropped:
            logger.warning(
                "Task backend %r shut down with %d task(s) that will not run: %s",
                self.alias,
                len(dropped),
                ", ".join(job.result.id for job in dropped[:10]),
            )
        if wait:
            for queue in queues:
                queue.join(timeout)
        registry.unregister(self)  # type: ignore[arg-type]


_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()


def pool_for(alias: str, options: Any, queues: Iterable[str]) -> Pool:
    """The process-wide pool of a backend alias, created on first use."""
    with _pools_lock:
        pool = _pools.get(alias)
        if pool is None:
            ensure_app_installed()
            pool = Pool(alias, PoolOptions.from_params(options, queues))
            # The registry shuts executors down at exit; a pool has the same
            # shutdown(wait, cancel_futures=) signature.
            registry.register(pool)  # type: ignore[arg-type]
            _pools[alias] = pool
        return pool


def existing_pool(alias: str) -> Pool | None:
    with _pools_lock:
        return _pools.get(alias)


def reset_pools(timeout: float | None = RESET_JOIN_TIMEOUT) -> None:
    """Shut every pool down and forget it and its results.

    Called when the ``TASKS`` setting changes (tests, ``override_settings``),
    so that the next enqueue builds pools from the new settings. Waiting
    tasks are cancelled; running ones get ``timeout`` seconds to finish.
    """
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True, timeout=timeout)


def _reset_on_tasks_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS":
        reset_pools()


setting_changed.connect(
    _reset_on_tasks_change, dispatch_uid="django_thread.tasks.reset"
)


# --- The backend ----------------------------------------------------------


class ThreadPoolBackend(BaseTaskBackend):
    """Run tasks on worker threads of this process, each as a unit of work.

    ``enqueue()`` returns at once with a READY result; the task runs on one
    of its queue's workers, by priority then arrival, not before its
    ``run_after``. Inside ``transaction.atomic()`` on OPTIONS["DATABASE"],
    the enqueue waits for the commit and is dropped on rollback (see
    :meth:`enqueue`). Results are kept in this process only.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> TaskResult:
        """Queue the task; return its READY result at once.

        Arguments are serialized here, in the caller, so that a task that
        could not be sent to a distributed backend fails here too, with the
        framework's own error. Inside an atomic block on the configured
        database (with ``ENQUEUE_ON_COMMIT``), the returned result already
        has its id, but the task is only enqueued when the transaction
        commits: until then ``enqueued_at`` is None and ``get_result``
        raises ``TaskResultDoesNotExist``, and after a rollback it always
        will.
        """
        self.validate_task(task)
        payload = json.dumps(
            {"args": normalize_json(args), "kwargs": normalize_json(kwargs)},
            allow_nan=False,
        )
        arguments = json.loads(payload)
        result = TaskResult(
            task=task,
            id=new_id(),
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=arguments["args"],
            kwargs=arguments["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        pool = self._pool()
        returned = _copy_result(result)
        job = _Job(result, payload)
        database = pool.options.database
        # in_atomic_block, not on_commit() alone: outside a transaction
        # on_commit() would open a connection in the caller just to learn
        # that it is in autocommit mode.
        if (
            pool.options.enqueue_on_commit
            and transaction.get_connection(database).in_atomic_block
        ):
            # The pool is looked up at commit time, in case TASKS changed.
            # robust: the caller's data is committed by then, so a failure is
            # logged (by Django) rather than raised past their other hooks.
            transaction.on_commit(
                lambda: self._pool().submit(job), using=database, robust=True
            )
        else:
            pool.submit(job)
            _update(returned, enqueued_at=result.enqueued_at)
        return returned

    def get_result(self, result_id: str) -> TaskResult:
        pool = existing_pool(self.alias)
        if pool is None:
            raise TaskResultDoesNotExist(result_id)
        return pool.results.get(result_id)

    async def aget_result(self, result_id: str) -> TaskResult:
        # Results are in memory behind a short lock: no thread hop needed.
        return self.get_result(result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        from django.apps import apps

        messages = list(super().check(**kwargs))
        messages += option_errors(self.options, self.queues)
        if not apps.is_installed("django_thread"):
            messages.append(
                checks.Error(
                    f"Task backend {self.alias!r} is a ThreadPoolBackend, but "
                    "django_thread is not in INSTALLED_APPS.",
                    hint="Add 'django_thread' to INSTALLED_APPS.",
                    id=E_APP_NOT_INSTALLED,
                )
            )
        return messages

    def _pool(self) -> Pool:
        return pool_for(self.alias, self.options, self.queues)
