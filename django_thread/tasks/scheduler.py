"""A named queue's waiting tasks, by priority and ``run_after``, and its workers."""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from django_thread.tasks.results import new_id
from django_thread.tasks.running import _Job, _run_job
from django_thread.workers import start_worker

if TYPE_CHECKING:
    from django_thread.tasks.pools import Pool

logger = logging.getLogger("django_thread")

#: The longest an idle worker sleeps without re-reading the clock: deferred
#: tasks are due by wall-clock time, which can jump.
MAX_IDLE_WAIT = 60.0


class TaskQueue:
    """One named queue: its waiting tasks and the worker threads serving it.

    Waiting tasks sit in two heaps under one condition: ``ready`` by
    (-priority, arrival) so that higher priorities run first and equal ones
    in order, and ``deferred`` by ``run_after``. An idle worker sleeps on the
    condition until it is notified or the earliest deferred task is due;
    nothing polls. Workers are started as tasks arrive, up to the queue's
    count, by :func:`django_thread.workers.start_worker` (the shape they
    share with the executor's workers); exit runs through
    :meth:`Pool.shutdown`. Workers belong to a generation: retiring them
    (:meth:`retire_workers`) starts a new one, and the old workers exit
    once their current task is done.
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
        #: Workers of earlier generations that may still be finishing a task.
        self._retired_threads: list[threading.Thread] = []
        self._generation = 0
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

        A waiting worker is woken, if there is one: each waiting worker
        counts itself in ``_waiting`` before it waits, under the same lock,
        so with none counted a notify would find no one, and costs a Python
        call per task for nothing. A new worker is started while there is
        more ready work than waiting workers to take it, and always when
        there is none at all, since a deferred task needs someone to wait
        for it. A notification that reaches a worker whose wait just timed
        out is not lost: every worker looks at the heaps before waiting
        again.
        """
        if self._waiting:
            self._condition.notify()
        if len(self._threads) < self.max_workers and (
            len(self._ready) > self._waiting or not self._threads
        ):
            self._start_worker()

    def _start_worker(self) -> None:
        worker_id = new_id()
        thread = start_worker(
            f"django_thread.tasks[{self.pool.alias}/{self.name}]-{len(self._threads)}",
            self._work,
            (worker_id, self._generation),
            logger,
            self.pool.options.persistent_connections,
        )
        self._threads.append(thread)
        logger.debug("Started task worker %s as %s", worker_id, thread.name)

    def _next_job(self, generation: int) -> _Job | None:
        """The next task to run, or None when this worker should exit.

        It should exit when the queue is closing and drained, or when its
        generation of workers was retired.
        """
        with self._condition:
            while True:
                if generation != self._generation:
                    return None
                fell_due = False
                if self._deferred:  # the clock is read only for them
                    now = timezone.now()
                    while self._deferred and self._deferred[0][0] <= now:
                        run_after, arrival, job = heapq.heappop(self._deferred)
                        heapq.heappush(
                            self._ready, (-job.result.task.priority, arrival, job)
                        )
                        fell_due = True
                if self._ready:
                    job = heapq.heappop(self._ready)[-1]
                    if self._ready and (fell_due or not self._waiting):
                        # More is ready than this worker takes. Tasks that
                        # fell due had no put() to wake workers for them,
                        # and with no worker waiting, another may be
                        # started (retire_workers() starts only one). Any
                        # other waiting worker was woken by the put() of
                        # each ready task: waking more would only make them
                        # find the heap empty and wait again.
                        self._wake_or_start_worker()
                    return job
                if self._closing:
                    return None
                timeout = MAX_IDLE_WAIT
                if self._deferred:
                    due_in = (self._deferred[0][0] - timezone.now()).total_seconds()
                    timeout = min(max(due_in, 0.0), MAX_IDLE_WAIT)
                self._waiting += 1
                try:
                    self._condition.wait(timeout)
                finally:
                    self._waiting -= 1

    def _work(self, worker_id: str, generation: int) -> None:
        """The worker loop (crashes and connections: see ``start_worker``)."""
        while True:
            job = self._next_job(generation)
            if job is None:
                return
            # A fresh context per task, as a worker process would have:
            # nothing leaks from the caller or from the previous task.
            contextvars.Context().run(
                _run_job, self.pool.sender, job, worker_id, self.pool.results
            )
            del job

    def retire_workers(self) -> list[threading.Thread]:
        """Make the current workers exit once idle; new tasks start new ones."""
        with self._condition:
            retired, self._threads = self._threads, []
            self._retired_threads = [
                thread for thread in self._retired_threads if thread.is_alive()
            ] + retired
            self._generation += 1
            self._condition.notify_all()
            if self._ready or self._deferred:
                self._start_worker()
        return retired

    def after_fork_in_child(self) -> list[_Job]:
        """Forget the parent's workers and waiting tasks; return those tasks.

        The condition is re-created: a parent thread may have held it at
        the fork.
        """
        self._condition = threading.Condition()
        dropped = [job for _, _, job in self._ready + self._deferred]
        self._ready.clear()
        self._deferred.clear()
        self._threads = []
        self._retired_threads = []
        self._waiting = 0
        self._generation += 1
        return dropped

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
        for thread in self._threads + self._retired_threads:
            remaining = (
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            thread.join(remaining)
            if thread.is_alive():
                logger.warning(
                    "Task worker %s is still running a task; leaving it behind",
                    thread.name,
                )
