"""The workers of a DURABLE backend: claim rows, run each as a unit, hold a lease.

One engine per backend alias and process. Its threads:

- **the poller**, the only thread that queries for work. It claims a due
  row (``DBTaskResult.objects.ready()``, then django-tasks-db's
  ``get_locked()`` and ``claim()``: ``SELECT ... FOR UPDATE SKIP LOCKED``
  in a short transaction, an exclusive one on SQLite) only when one of the
  row's queue's workers is idle, so a busy process never hoards rows
  another could run. It is woken at once by an enqueue in this process
  (after the commit); otherwise it asks every ``POLL_INTERVAL`` whether any
  row is due, with one indexed ``EXISTS`` for all of the backend's queues,
  and claims only when one is. Its queries run on its own connection,
  outside any unit, and never leave a transaction open.
- **the workers**, ``WORKERS`` per queue (``QUEUE_WORKERS``), which only run
  what the poller hands them: each task as one unit of work
  (:func:`~django_thread.lifecycle.run_unit`), so connections are handled as
  in every django_thread unit (``CONN_MAX_AGE``, health checks,
  ``PERSISTENT_CONNECTIONS``), and the result or error is stored on the row
  by django-tasks-db's ``set_successful()`` / ``set_failed()``.

**Leases.** A claim appends this engine's worker id to the row's
``worker_ids``. The engine holds a :class:`~django_thread.models.WorkerLease`
under that id, renewed every ``LEASE / 3`` seconds while it has work, and
before every claim. Every ``LEASE`` seconds the poller looks for RUNNING rows
whose last worker id is a django_thread one with no live lease: their process
died (SIGKILL, OOM, power) and nothing will finish them. Each goes back to
READY, to be claimed like any other, or, once it has been started
``MAX_ATTEMPTS`` times, is marked FAILED with a :class:`WorkerLost` error. A
row run by django-tasks-db's ``db_worker`` (whose worker ids are not ours) is
never touched. So a task runs at least once, and more than once only when a
process died while running it: tasks must be idempotent.

**Exit and fork.** At exit the engine stops claiming, puts back rows it
claimed but had not started, and gives running tasks
``DJANGO_THREAD_STOP_TIMEOUT`` seconds. A task still running then is left
RUNNING under this process's lease, which lapses, so another process (or
this deployment after its restart) runs it again. In a forked child the
engine starts afresh under a new worker id: the rows the parent claimed
stay the parent's. Clocks of the processes sharing a database must agree to
well within ``LEASE``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed
from django.db import OperationalError
from django.db.models import Q
from django.utils import timezone

from django_thread import registry
from django_thread.lifecycle import run_unit, send_robustly
from django_thread.tasks.compat import (
    TaskContext,
    TaskResultStatus,
    task_finished,
    task_started,
)
from django_thread.tasks.durable_checks import missing_tables, not_migrated_message
from django_thread.tasks.options import W_DURABLE_NOT_MIGRATED, PoolOptions
from django_thread.tasks.results import through_json
from django_thread.thread_connections import (
    atomic_block_open,
    close_thread_connections,
)
from django_thread.workers import start_worker

if TYPE_CHECKING:
    from django_tasks_db.models import DBTaskResult

logger = logging.getLogger("django_thread")

#: Worker ids of this engine start with it: recovery touches no other row.
WORKER_ID_PREFIX = "django-thread-"


class WorkerLost(Exception):
    """The error of a task whose last allowed run died with its process."""


def new_worker_id() -> str:
    return WORKER_ID_PREFIX + secrets.token_hex(16)


@dataclasses.dataclass
class _Group:
    """The workers of one queue, or (``queues`` None) of every other queue."""

    queues: frozenset[str] | None
    size: int
    #: Rows claimed for this group and not yet taken by a worker.
    claimed: collections.deque[DBTaskResult[Any, Any]] = dataclasses.field(
        default_factory=collections.deque
    )
    #: Rows claimed and not finished: in ``claimed``, or running.
    busy: int = 0


class _Outcome:
    """What a task's run produced, and whether it is on the row yet."""

    __slots__ = ("value", "error", "stored")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.stored = False


class _TaskFailed(Exception):
    """Raised out of the unit of work so that it runs its on-error cleanup."""


class Engine:
    """The claims, workers and lease of one DURABLE backend in this process."""

    def __init__(
        self, alias: str, options: PoolOptions, queues: Iterable[str], sender: Any
    ) -> None:
        self.alias = alias
        self.options = options
        self.sender = sender
        self.database = options.database
        named = (
            {name: options.workers_for(name) for name in queues}
            if queues
            else dict(options.queue_workers)
        )
        self._groups = [
            _Group(frozenset({name}), count) for name, count in named.items() if count
        ]
        self._named_queues = frozenset(named)
        if not queues and options.workers:
            self._groups.append(_Group(None, options.workers))
        self._closed = False
        self._generation = 0
        self._fresh_state()

    def _fresh_state(self) -> None:
        """A new identity and new locks: at creation, and in a forked child."""
        self.worker_id = new_worker_id()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._running: dict[str, DBTaskResult[Any, Any]] = {}
        self._renew_at = 0.0  # monotonic; 0: no live lease
        self._lease_ends = 0.0  # monotonic, as this process last set it
        self._lease_held = False
        self._maybe_more = False
        #: Whether the poller said the tables are missing (once, until they exist).
        self._not_migrated_reported = False
        for group in self._groups:
            group.claimed.clear()
            group.busy = 0

    # --- Public surface ---

    def ensure_started(self) -> None:
        """Start the poller and the workers, once per process (and per fork)."""
        if self._started or not self._groups:
            return  # no workers here: other processes (db_worker) run the rows
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            generation = self._generation
            persistent = self.options.persistent_connections
            threads = [
                start_worker(
                    f"django_thread-durable-{self.alias}-poller",
                    self._poll_loop,
                    (generation,),
                    logger,
                    persistent_connections=True,
                    track=False,
                )
            ]
            for group in self._groups:
                label = ",".join(sorted(group.queues)) if group.queues else "*"
                threads += [
                    start_worker(
                        f"django_thread-durable-{self.alias}-{label}-{index}",
                        self._work_loop,
                        (group, generation),
                        logger,
                        persistent_connections=persistent,
                        track=False,
                    )
                    for index in range(group.size)
                ]
            self._threads = threads
        logger.info(
            "Task backend %r: worker %s (pid %d) runs %s",
            self.alias,
            self.worker_id,
            os.getpid(),
            ", ".join(
                f"{group.size} on {'/'.join(sorted(group.queues or ['*']))}"
                for group in self._groups
            ),
        )

    def wake(self) -> None:
        """A row may be due now: claim without waiting for the next poll."""
        self._wake.set()

    def shutdown(
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Stop claiming; put back unstarted rows; give running tasks ``timeout``.

        ``cancel_futures`` changes nothing: rows not started stay in the
        database either way, for the next process. The signature is the
        one :func:`django_thread.registry.shutdown_all` calls.
        """
        if timeout is None:
            # At exit no system check guards the value: a bad one is logged
            # and the default used, never a crash that strands the tasks.
            from django_thread.checks import read_safely

            timeout = float(read_safely("DJANGO_THREAD_STOP_TIMEOUT"))
        with self._lock:
            if self._closed:
                return
            self._closed = True
        cut_off = self._stop(timeout if wait else 0.0)
        registry.unregister(self)
        if cut_off:
            logger.warning(
                "Task backend %r: %d task(s) still running at exit were cut "
                "off: %s. They stay RUNNING under worker %s, and a live process "
                "of this backend (or this deployment, once restarted) runs "
                "them again when its lease lapses, within LEASE=%s s.",
                self.alias,
                len(cut_off),
                ", ".join(cut_off[:10]),
                self.worker_id,
                self.options.lease,
            )
        elif self._lease_held:
            self._drop_lease()

    # --- The registry's hooks (see django_thread.registry.WorkerPool) ---

    def _pending_work(self) -> registry.PendingWork:
        """Tasks running now; rows claimed but not started go back to the table."""
        return registry.PendingWork(
            f"durable tasks backend {self.alias!r}", len(self._running), 0
        )

    def _retire_workers(self) -> list[threading.Thread]:
        """Stop every thread (they start again on the next enqueue)."""
        with self._lock:
            threads = list(self._threads)
        self._stop(0.0)
        return threads

    def _after_fork_in_child(self) -> None:
        """New identity, locks and threads; the parent's claimed rows stay its own.

        No lock of the parent is taken: each is replaced. Threads start
        again on the child's first enqueue or request.
        """
        self._generation += 1
        self._fresh_state()

    # --- Stopping ---

    def _stop(self, timeout: float) -> list[str]:
        """End this generation of threads; return the ids of tasks still running."""
        with self._lock:
            self._generation += 1
            self._started = False
            unstarted = [row for group in self._groups for row in group.claimed]
            for group in self._groups:
                group.busy -= len(group.claimed)
                group.claimed.clear()
            threads, self._threads = self._threads, []
            self._work.notify_all()
        self._wake.set()
        for row in unstarted:
            self._unclaim(row)
        deadline = time.monotonic() + timeout
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return list(self._running)

    def _unclaim(self, row: DBTaskResult[Any, Any]) -> None:
        """Put a row claimed here, never started, back in the queue as it was."""
        from django_tasks_db.utils import exclusive_transaction

        try:
            with exclusive_transaction(self.database):
                locked = (
                    type(row)
                    .objects.using(self.database)
                    .select_for_update()
                    .filter(pk=row.pk, status=TaskResultStatus.RUNNING)
                    .first()
                )
                if locked is not None and locked.worker_ids[-1:] == [self.worker_id]:
                    locked.status = TaskResultStatus.READY
                    locked.worker_ids = locked.worker_ids[:-1]
                    locked.started_at = None
                    locked.save(update_fields=["status", "worker_ids", "started_at"])
        except Exception:
            logger.warning(
                "Task %s, claimed but not started, could not be put back; it "
                "runs again once this process's lease lapses",
                row.pk,
                exc_info=True,
            )

    def _drop_lease(self) -> None:
        from django_thread.models import WorkerLease

        try:
            WorkerLease.objects.using(self.database).filter(
                worker_id=self.worker_id
            ).delete()
        except Exception:
            logger.debug("Dropping lease %s failed", self.worker_id, exc_info=True)
        self._lease_held = False

    # --- The poller ---

    def _poll_loop(self, generation: int) -> None:
        next_poll = next_recovery = 0.0  # both at once on start
        interval = self.options.poll_interval
        while self._generation == generation:
            woken = self._wake.is_set()
            if woken:
                self._wake.clear()
            now = time.monotonic()
            try:
                if now >= next_recovery:
                    next_recovery = now + self.options.lease
                    self._recover()
                if self._busy() and now >= self._renew_at:
                    self._renew_lease()
                if woken or now >= next_poll:
                    next_poll = now + interval
                    self._claim_due(generation, probe=not woken)
            except Exception:
                self._report_poll_failure(interval)
                # A broken connection is replaced on the next query.
                close_thread_connections()
                next_poll = time.monotonic() + interval
            else:
                self._not_migrated_reported = False
            due = min(next_poll, next_recovery)
            if self._busy():
                due = min(due, self._renew_at)
            self._wake.wait(max(0.0, due - time.monotonic()))

    def _busy(self) -> bool:
        return any(group.busy for group in self._groups)

    def _claimable(self) -> Q | None:
        """Rows that an idle worker could run now; None when none is idle."""
        parts = []
        for group in self._groups:
            if group.busy >= group.size:
                continue
            if group.queues is not None:
                parts.append(Q(queue_name__in=group.queues))
            elif self._named_queues:
                parts.append(~Q(queue_name__in=self._named_queues))
            else:
                return Q()
        if not parts:
            return None
        claimable = parts[0]
        for part in parts[1:]:
            claimable |= part
        return claimable

    def _group_for(self, queue_name: str) -> _Group:
        for group in self._groups:
            if group.queues is None or queue_name in group.queues:
                if group.queues is not None or queue_name not in self._named_queues:
                    return group
        raise LookupError(queue_name)  # _claimable() asked only for these

    def _ready_rows(self) -> Any:
        from django_tasks_db.models import DBTaskResult

        return (
            DBTaskResult.objects.using(self.database)
            .ready()
            .filter(backend_name=self.alias)
        )

    def _claim_due(self, generation: int, probe: bool) -> None:
        """Claim due rows while a worker of their queue is idle.

        ``probe``: ask first, with one non-locking query, whether any is due,
        so that an idle process opens no transaction at all.
        """
        with self._lock:
            claimable = self._claimable()
        if claimable is None:
            self._maybe_more = True
            return
        if probe and not self._ready_rows().filter(claimable).exists():
            return
        if time.monotonic() >= self._renew_at:
            self._renew_lease()  # the lease outlives the claim by 2/3 LEASE
        while self._generation == generation:
            with self._lock:
                claimable = self._claimable()
            if claimable is None:
                self._maybe_more = True
                return
            if time.monotonic() >= self._renew_at:
                self._renew_lease()  # a long run of claims (SQLite waits)
            row = self._claim_one(self._ready_rows().filter(claimable))
            if row is None:
                self._maybe_more = False
                return
            with self._lock:
                handed = self._generation == generation
                if handed:
                    group = self._group_for(row.queue_name)
                    group.claimed.append(row)
                    group.busy += 1
                    self._work.notify_all()
            if not handed:
                self._unclaim(row)  # stopped while claiming: no worker will take it

    def _report_poll_failure(self, interval: float) -> None:
        """Log a failed poll: once, in one line, while the tables are missing."""
        try:
            missing = missing_tables(self.database)
        except Exception:
            missing = []
        if not missing:
            logger.exception(
                "Task backend %r: polling %r failed; retrying in %s s",
                self.alias,
                self.database,
                interval,
            )
        elif not self._not_migrated_reported:
            self._not_migrated_reported = True
            logger.error(
                "%s: no task runs here until manage.py migrate --database %s "
                "creates them; polling on, every %s s (%s).",
                not_migrated_message(self.alias, self.database, missing),
                self.database,
                interval,
                W_DURABLE_NOT_MIGRATED,
            )

    def _claim_one(self, rows: Any) -> DBTaskResult[Any, Any] | None:
        from django_tasks_db.utils import (
            exclusive_transaction,
            is_locked_database_exception,
        )

        try:
            with exclusive_transaction(self.database):
                row: DBTaskResult[Any, Any] | None = rows.get_locked()
                if row is not None:
                    row.claim(self.worker_id)
        except OperationalError as exc:
            if is_locked_database_exception(exc):
                return None  # SQLite busy, MySQL lock wait: try again later
            raise
        return row

    def _renew_lease(self) -> None:
        from django_thread.models import WorkerLease

        late = time.monotonic() - self._lease_ends
        if self._lease_held and late > 0 and self._busy():
            logger.error(
                "Task backend %r: the lease of worker %s lapsed %.1f s before "
                "it was renewed, while it had tasks; another process may run "
                "them again. Make LEASE longer than the process may stall "
                "(database lock waits, pauses).",
                self.alias,
                self.worker_id,
                late,
            )
        renewed = time.monotonic()
        expires_at = timezone.now() + timedelta(seconds=self.options.lease)
        leases = WorkerLease.objects.using(self.database)
        if not leases.filter(worker_id=self.worker_id).update(expires_at=expires_at):
            leases.create(
                worker_id=self.worker_id,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                expires_at=expires_at,
            )
        self._lease_held = True
        self._lease_ends = renewed + self.options.lease
        self._renew_at = renewed + self.options.lease / 3

    def _recover(self) -> None:
        """Requeue (or fail) the rows of django_thread workers whose lease lapsed."""
        from django_tasks_db.models import DBTaskResult

        from django_thread.models import WorkerLease

        running = (
            DBTaskResult.objects.using(self.database)
            .running()
            .filter(backend_name=self.alias)
            .values_list("id", "worker_ids")
        )
        orphans = [
            (pk, worker_ids)
            for pk, worker_ids in running
            if worker_ids
            and isinstance(worker_ids[-1], str)
            and worker_ids[-1].startswith(WORKER_ID_PREFIX)
            and worker_ids[-1] != self.worker_id
        ]
        if not orphans:
            return
        now = timezone.now()
        leases = WorkerLease.objects.using(self.database)
        live = set(
            leases.filter(
                worker_id__in={worker_ids[-1] for _, worker_ids in orphans},
                expires_at__gt=now,
            ).values_list("worker_id", flat=True)
        )
        lost = [(pk, ids) for pk, ids in orphans if ids[-1] not in live]
        for pk, worker_ids in lost:
            self._requeue_lost(pk, worker_ids)
        if lost:
            leases.filter(expires_at__lt=now).exclude(
                worker_id__in={ids[-1] for _, ids in orphans} - live
            ).delete()
            self.wake()

    def _requeue_lost(self, pk: Any, worker_ids: list[str]) -> None:
        from django_tasks_db.models import DBTaskResult
        from django_tasks_db.utils import exclusive_transaction

        with exclusive_transaction(self.database):
            row = (
                DBTaskResult.objects.using(self.database)
                .select_for_update(skip_locked=True)
                .filter(pk=pk, status=TaskResultStatus.RUNNING)
                .first()
            )
            if row is None or row.worker_ids != worker_ids:
                return  # finished, or already handled by another process
            attempts = len(worker_ids)
            if attempts >= self.options.max_attempts:
                row.set_failed(
                    WorkerLost(
                        f"Task {pk} was started {attempts} time(s), "
                        f"MAX_ATTEMPTS={self.options.max_attempts}, and the "
                        "process running it stopped before it finished each "
                        f"time; the last was worker {worker_ids[-1]}."
                    )
                )
                logger.error(
                    "Task %s failed: its process (worker %s) died during "
                    "attempt %d of MAX_ATTEMPTS=%d",
                    pk,
                    worker_ids[-1],
                    attempts,
                    self.options.max_attempts,
                )
            else:
                row.status = TaskResultStatus.READY
                row.save(update_fields=["status"])
                logger.warning(
                    "Task %s was running in worker %s, whose lease lapsed: "
                    "queued again (attempt %d of MAX_ATTEMPTS=%d done)",
                    pk,
                    worker_ids[-1],
                    attempts,
                    self.options.max_attempts,
                )

    # --- The workers ---

    def _work_loop(self, group: _Group, generation: int) -> None:
        while True:
            with self._lock:
                while not group.claimed and self._generation == generation:
                    self._work.wait()
                if self._generation != generation:
                    return  # stopped, or the pool moved on (fork, retire)
                row = group.claimed.popleft()
                self._running[str(row.pk)] = row
            try:
                self._run(row)
            finally:
                with self._lock:
                    self._running.pop(str(row.pk), None)
                    group.busy -= 1
                    more = self._maybe_more
                if more:
                    self._wake.set()

    def _run(self, row: DBTaskResult[Any, Any]) -> None:
        """One task as one unit; its outcome stored on the row.

        The row is written inside the unit, on its connection, unless the
        task left a transaction open there (the unit rolls that back, and
        the row with it): then, or if that write failed, it is written in a
        unit of its own once the task's unit has cleaned up.
        """
        outcome = _Outcome()
        try:
            run_unit(self.sender, self._call, (row, outcome))
        except _TaskFailed:
            pass
        except BaseException as exc:
            logger.error(
                "Task %s could not run as a unit of work", row.pk, exc_info=True
            )
            if outcome.error is None:
                outcome.error = exc
        if not outcome.stored:
            try:
                run_unit(self.sender, self._store, (row, outcome))
                self._send(task_finished, row)
            except BaseException:
                logger.error(
                    "Task %s ran, but its result could not be stored; it "
                    "stays RUNNING and runs again after this process exits",
                    row.pk,
                    exc_info=True,
                )

    def _call(self, row: DBTaskResult[Any, Any], outcome: _Outcome) -> None:
        """The body of a task's unit."""
        try:
            task = row.task
            result = row.task_result
            self._send(task_started, row, result)
            arguments = row.args_kwargs
            args, kwargs = arguments["args"], arguments["kwargs"]
            if task.takes_context:
                raw = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                raw = task.call(*args, **kwargs)
            # A return value no backend could store fails the task.
            outcome.value = through_json(raw)
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt raised by a task only fail it.
            outcome.error = exc
        if not atomic_block_open(self.database):
            try:
                self._store(row, outcome)
            except Exception:
                logger.debug(
                    "Storing task %s in its unit failed", row.pk, exc_info=True
                )
        if outcome.stored:
            self._send(task_finished, row)
        if outcome.error is not None:
            raise _TaskFailed

    def _store(self, row: DBTaskResult[Any, Any], outcome: _Outcome) -> None:
        if outcome.error is None:
            row.set_successful(outcome.value)
        else:
            row.set_failed(outcome.error)
        outcome.stored = True

    def _send(
        self, signal: Any, row: DBTaskResult[Any, Any], result: Any = None
    ) -> None:
        try:
            if result is None:
                result = row.task_result
        except Exception:
            logger.exception("Task %s has no task result to signal", row.pk)
            return
        send_robustly(
            signal, self.sender, f"a task signal for task {row.pk}", task_result=result
        )


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()

registry.new_lock_in_forked_child(globals(), "_engines_lock")


def engine_for(
    alias: str, options: PoolOptions, queues: Iterable[str], sender: Any
) -> Engine:
    """The process-wide engine of a DURABLE backend alias, created on first use."""
    with _engines_lock:
        engine = _engines.get(alias)
        if engine is None:
            engine = Engine(alias, options, queues, sender)
            registry.register(engine)
            _engines[alias] = engine
        return engine


def reset_engines() -> None:
    """Stop every engine and forget it (TASKS changed, or a test ends)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.shutdown(wait=True)


def _reset_on_tasks_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS":
        reset_engines()


setting_changed.connect(
    _reset_on_tasks_change, dispatch_uid="django_thread.tasks.durable_engine.reset"
)
