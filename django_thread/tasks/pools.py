"""One process-wide pool per backend alias: its queues, its results, its reset."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from django.core.signals import setting_changed
from django.utils import timezone

from django_thread import dispatch, registry
from django_thread.lifecycle import ensure_app_installed
from django_thread.tasks.compat import task_enqueued
from django_thread.tasks.options import PoolOptions
from django_thread.tasks.queues import TaskQueue
from django_thread.tasks.results import ResultStore, update_result
from django_thread.tasks.running import Job, run_job

logger = logging.getLogger("django_thread")

#: How long a reset waits for a running task before giving up on its worker.
RESET_JOIN_TIMEOUT = 10.0


class Pool:
    """The process-wide workers and results of one backend alias."""

    def __init__(self, alias: str, options: PoolOptions, sender: Any) -> None:
        self.alias = alias
        #: The backend class, sender of the task signals.
        self.sender = sender
        self.options = options
        self.results = ResultStore(options.max_results, options.result_ttl)
        self._queues: dict[str, TaskQueue] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job: Job) -> None:
        """Publish the task as enqueued, tell receivers, and queue it."""
        if registry.exiting():
            raise RuntimeError("cannot enqueue tasks after interpreter shutdown")
        result = job.result
        update_result(result, enqueued_at=timezone.now())
        self.results.publish(result)
        try:
            dispatch.send(task_enqueued, self.sender, task_result=result)
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
                queue = TaskQueue(
                    self.alias,
                    name,
                    self.options.workers_for(name),
                    self._run,
                    self.options.persistent_connections,
                )
                self._queues[name] = queue
            return queue

    def _run(self, job: Job, worker_id: str) -> None:
        """Run one task on a worker of one of this pool's queues.

        The store is read at each call: a forked child replaces it.
        """
        run_job(self.sender, job, worker_id, self.results)

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
            # Without waiting, the pool stays registered, as an executor does.
            registry.unregister(self)

    # --- The registry's hooks (see django_thread.registry.WorkerPool) ---

    def _pending_work(self) -> registry.PendingWork:
        running = queued = deferred = 0
        now = timezone.now()
        for result in self.results.unfinished():
            if result.status == "RUNNING":
                running += 1
            elif result.task.run_after is not None and result.task.run_after > now:
                deferred += 1
            else:
                queued += 1
        return registry.PendingWork(
            f"tasks backend {self.alias!r}", running, queued, deferred
        )

    def _retire_workers(self) -> list[threading.Thread]:
        with self._lock:
            queues = list(self._queues.values())
        return [thread for queue in queues for thread in queue.retire_workers()]

    def _after_fork_in_child(self) -> None:
        """In a forked child: new workers for new tasks; the parent's are dropped.

        Tasks waiting or running at the fork belong to the parent, which runs
        them. Results live in the memory of the process that enqueued the
        task, so the child starts with an empty store: the parent's results,
        and the store's lock, stay behind. Every lock is replaced, never
        taken, and nothing is logged: see the rule in
        :mod:`django_thread.registry`.
        """
        self._lock = threading.Lock()
        for queue in self._queues.values():
            queue.after_fork_in_child()
        self.results = ResultStore(self.options.max_results, self.options.result_ttl)


_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()

registry.new_lock_in_forked_child(globals(), "_pools_lock")


def pool_for(alias: str, options: Any, queues: Iterable[str], sender: Any) -> Pool:
    """The process-wide pool of a backend alias, created on first use.

    Looked up without the lock first: a dict read is atomic, and the lock
    only has to make sure that two first uses create one pool.
    """
    pool = _pools.get(alias)
    if pool is not None:
        return pool
    with _pools_lock:
        pool = _pools.get(alias)
        if pool is None:
            ensure_app_installed()
            pool = Pool(alias, PoolOptions.from_params(alias, options, queues), sender)
            registry.register(pool)
            _pools[alias] = pool
        return pool


def existing_pool(alias: str) -> Pool | None:
    return _pools.get(alias)  # atomic: see pool_for()


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
