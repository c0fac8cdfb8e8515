"""A named queue's waiting tasks, by priority and ``run_after``, and its workers."""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime

from django.utils import timezone

from django_thread.tasks.results import new_id
from django_thread.tasks.running import Job
from django_thread.workers import start_worker

logger = logging.getLogger("django_thread")

#: The longest an idle worker sleeps without re-reading the clock: deferred
#: tasks are due by wall-clock time, which can jump.
MAX_IDLE_WAIT = 60.0


class TaskQueue:
    """One named queue: its waiting tasks and the worker threads serving it.

    Waiting tasks sit in two heaps under one lock: ``ready`` by
    (-priority, arrival) so that higher priorities run first and equal ones
    in order, and ``deferred`` by ``run_after``. The hand-off has the shape
    of the executor's: an idle worker blocks on a ``SimpleQueue`` (in C,
    without holding the interpreter), and each new task wakes at most one
    idle worker by putting one token there, or starts a worker when none is
    idle, up to the queue's count, with
    :func:`django_thread.workers.start_worker` (the shape they share with
    the executor's workers). An idle worker waits until it gets a token or
    the earliest deferred task is due; nothing polls. Exit runs through
    :meth:`Pool.shutdown`. Workers belong to a generation: retiring them
    (:meth:`retire_workers`) starts a new one, and the old workers exit
    once their current task is done.

    The queue knows nothing of its pool: ``run(job, worker_id)`` runs one
    task (the pool's, which reads the pool's current result store),
    ``backend`` names the backend alias in thread names and messages, and
    ``persistent_connections`` is handed to each worker (None: the setting).
    """

    def __init__(
        self,
        backend: str,
        name: str,
        max_workers: int,
        run: Callable[[Job, str], None],
        persistent_connections: bool | None,
    ) -> None:
        self.backend = backend
        self.name = name
        self.max_workers = max_workers
        self._run = run
        self._persistent_connections = persistent_connections
        self._lock = threading.Lock()
        #: One token per idle worker that was told to look at the heaps.
        self._wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()
        #: Idle workers waiting on ``_wakeups`` that no token was put for yet.
        self._idle = 0
        self._ready: list[tuple[int, int, Job]] = []
        self._deferred: list[tuple[datetime, int, Job]] = []
        self._arrivals = itertools.count()
        self._threads: list[threading.Thread] = []
        #: Workers of earlier generations that may still be finishing a task.
        self._retired_threads: list[threading.Thread] = []
        self._generation = 0
        self._closing = False

    def put(self, job: Job) -> None:
        task = job.result.task
        with self._lock:
            if self._closing:
                raise RuntimeError(
                    f"The task queue {self.name!r} of backend {self.backend!r} "
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

        One idle worker is woken, if there is one: a token per task, so a
        burst of tasks wakes one worker each instead of all of them at
        once. Otherwise a new worker is started while the queue has fewer
        than its count, as the executor does when no worker is idle: a
        deferred task needs someone to wait for it, and the running workers
        may all be busy for long.
        """
        if self._idle:
            self._idle -= 1
            self._wakeups.put(None)
        elif len(self._threads) < self.max_workers and (
            self._ready or not self._threads
        ):
            self._start_worker()

    def _wake_all(self) -> None:
        """Wake every idle worker, to look at the queue's state; lock held."""
        for _ in range(self._idle):
            self._wakeups.put(None)
        self._idle = 0

    def _start_worker(self) -> None:
        worker_id = new_id()
        thread = start_worker(
            f"django_thread.tasks[{self.backend}/{self.name}]-{len(self._threads)}",
            self._work,
            (worker_id, self._generation),
            logger,
            self._persistent_connections,
        )
        self._threads.append(thread)
        logger.debug("Started task worker %s as %s", worker_id, thread.name)

    def _next_job(self, generation: int) -> Job | None:
        """The next task to run, or None when this worker should exit.

        It should exit when the queue is closing and drained, or when its
        generation of workers was retired.
        """
        while True:
            with self._lock:
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
                    if self._ready and (fell_due or not self._idle):
                        # More is ready than this worker takes. Tasks that
                        # fell due had no put() to wake workers for them,
                        # and with no worker idle, another may be started
                        # (retire_workers() starts only one). Any other idle
                        # worker was woken by the put() of each ready task.
                        self._wake_or_start_worker()
                    return job
                if self._closing:
                    return None
                timeout = MAX_IDLE_WAIT
                if self._deferred:
                    due_in = (self._deferred[0][0] - timezone.now()).total_seconds()
                    timeout = min(max(due_in, 0.0), MAX_IDLE_WAIT)
                self._idle += 1
            try:
                self._wakeups.get(timeout=timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle:
                        self._idle -= 1  # no token was put for this worker
                        continue
                # Every idle worker was counted out by a token put under the
                # lock: one is waiting for this worker in the queue already.
                self._wakeups.get_nowait()

    def _work(self, worker_id: str, generation: int) -> None:
        """The worker loop (crashes and connections: see ``start_worker``)."""
        while True:
            job = self._next_job(generation)
            if job is None:
                return
            # A fresh context per task, as a worker process would have:
            # nothing leaks from the caller or from the previous task.
            contextvars.Context().run(self._run, job, worker_id)
            del job

    def retire_workers(self) -> list[threading.Thread]:
        """Make the current workers exit once idle; new tasks start new ones."""
        with self._lock:
            retired, self._threads = self._threads, []
            self._retired_threads = [
                thread for thread in self._retired_threads if thread.is_alive()
            ] + retired
            self._generation += 1
            self._wake_all()
            if self._ready or self._deferred:
                self._start_worker()
        return retired

    def after_fork_in_child(self) -> list[Job]:
        """Forget the parent's workers and waiting tasks; return those tasks.

        The lock and the wake-up queue are re-created: a parent thread may
        have held them at the fork.
        """
        self._lock = threading.Lock()
        self._wakeups = queue.SimpleQueue()
        self._idle = 0
        dropped = [job for _, _, job in self._ready + self._deferred]
        self._ready.clear()
        self._deferred.clear()
        self._threads = []
        self._retired_threads = []
        self._generation += 1
        return dropped

    def close(self, cancel: bool) -> list[Job]:
        """Stop taking tasks; return the ones that will now never run."""
        with self._lock:
            self._closing = True
            dropped = [job for _, _, job in self._deferred]
            self._deferred.clear()
            if cancel:
                dropped += [job for _, _, job in self._ready]
                self._ready.clear()
            self._wake_all()
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
