"""A ``ThreadPoolExecutor`` whose every submitted call is one unit of work.

Wrapping each call is not enough: with ``CONN_MAX_AGE`` above zero a worker
keeps its connection between calls, and the standard library gives no hook
to run code in a worker thread as it exits, so its connections would stay
open until the garbage collector breaks the wrapper's reference cycles. So
this class keeps the standard constructor, ``submit``, ``map`` and
``shutdown`` semantics (it subclasses
``concurrent.futures.ThreadPoolExecutor``, so ``isinstance`` checks such as
``asyncio``'s ``set_default_executor`` still pass) but runs its own worker
loop, which closes the worker's connections in a ``finally`` when it exits.

Its workers are daemon threads so that idle workers do not block interpreter
exit; :mod:`django_thread.registry` shuts every live executor down from an
``atexit`` handler instead, as the standard library does for its own pool,
which lets queued work finish and workers close their connections.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent import futures
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, ParamSpec, TypeVar

from django_thread import registry
from django_thread.context import Snapshot, call_in, capture
from django_thread.lifecycle import (
    close_thread_connections,
    ensure_app_installed,
    run_unit,
)

# concurrent.futures logs worker crashes here; so do we, for parity.
futures_logger = logging.getLogger("concurrent.futures")

_executor_numbers = itertools.count()

_P = ParamSpec("_P")
_T = TypeVar("_T")

_cpu_count = getattr(os, "process_cpu_count", os.cpu_count)  # 3.13 added it


class _Job:
    """One submitted call: the result is set only after the unit's cleanup."""

    __slots__ = ("future", "sender", "fn", "args", "kwargs", "snapshot")

    def __init__(
        self,
        future: futures.Future[Any],
        sender: Any,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        snapshot: Snapshot | None,
    ) -> None:
        self.future = future
        self.sender = sender
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.snapshot = snapshot

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = call_in(
                self.snapshot, run_unit, self.sender, self.fn, self.args, self.kwargs
            )
        except BaseException as exc:
            self.future.set_exception(exc)
            # Break the reference cycle through the exception's traceback.
            self = None  # type: ignore[assignment]
        else:
            self.future.set_result(result)


def _work(
    executor_ref: weakref.ref[ThreadPoolExecutor],
    jobs: queue.SimpleQueue[_Job | None],
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    """The worker loop; whatever ends it, the worker's connections close."""
    try:
        if initializer is not None:
            try:
                run_unit(_sender_of(executor_ref), initializer, initargs, {})
            except BaseException:
                futures_logger.critical("Exception in initializer:", exc_info=True)
                executor = executor_ref()
                if executor is not None:
                    executor._initializer_failed()
                return
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                executor = executor_ref()
                if executor is not None:
                    executor._idle_semaphore.release()
                del executor
                job = jobs.get(block=True)
            if job is not None:
                job.run()
                del job  # drop the job's references before waiting again
                continue
            executor = executor_ref()
            if executor is None or executor._shutdown or registry.exiting():
                if executor is not None:
                    executor._shutdown = True
                jobs.put(None)  # wake the next worker
                return
            del executor
    except BaseException:
        futures_logger.critical("Exception in worker", exc_info=True)
    finally:
        close_thread_connections()


def _sender_of(executor_ref: weakref.ref[ThreadPoolExecutor]) -> Any:
    executor = executor_ref()
    return type(executor) if executor is not None else ThreadPoolExecutor


class ThreadPoolExecutor(futures.ThreadPoolExecutor):
    """A drop-in ``concurrent.futures.ThreadPoolExecutor`` for Django code.

    Each submitted call runs in a worker as one unit of work: Django's
    ``request_started`` before it, ``request_finished`` after it, a leaked
    transaction rolled back, connections kept or closed per ``CONN_MAX_AGE``.
    The future completes only after that cleanup. Each call runs in a copy of
    the submitter's context (``DJANGO_THREAD_COPY_CONTEXT``). When the
    executor shuts down, each worker closes its connections before it exits.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        # The stdlib's own state is not initialised: this class runs its own
        # workers, and every stdlib method that would use that state is
        # overridden here. Attribute names follow the stdlib's for code that
        # introspects executors; typeshed types three of them for the
        # stdlib's own work items, hence the ignores.
        if max_workers is None:
            max_workers = min(32, (_cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        ensure_app_installed()
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or (
            f"ThreadPoolExecutor-{next(_executor_numbers)}"
        )
        self._initializer = initializer  # type: ignore[assignment]
        self._initargs = initargs
        self._work_queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # type: ignore[assignment]
        self._idle_semaphore = threading.Semaphore(0)
        self._threads: set[threading.Thread] = set()
        self._broken: str | bool = False  # type: ignore[assignment]
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        registry.register(self)

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> futures.Future[_T]:
        with self._shutdown_lock:
            if self._broken:
                raise BrokenThreadPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if registry.exiting():
                raise RuntimeError(
                    "cannot schedule new futures after interpreter shutdown"
                )
            future: futures.Future[_T] = futures.Future()
            job = _Job(future, type(self), fn, args, kwargs, capture())
            self._work_queue.put(job)
            self._adjust_thread_count()
            return future

    def _adjust_thread_count(self) -> None:
        if self._idle_semaphore.acquire(timeout=0):
            return  # an idle worker will take the job

        def wake_workers(
            _: object, jobs: queue.SimpleQueue[Any] = self._work_queue
        ) -> None:
            jobs.put(None)

        if len(self._threads) < self._max_workers:
            worker = threading.Thread(
                name=f"{self._thread_name_prefix}_{len(self._threads)}",
                target=_work,
                args=(
                    weakref.ref(self, wake_workers),
                    self._work_queue,
                    self._initializer,
                    self._initargs,
                ),
                daemon=True,
            )
            worker.start()
            self._threads.add(worker)

    def _take_queued_jobs(self) -> list[_Job]:
        """Empty the queue: the jobs no worker has started, without wake-ups."""
        jobs: list[_Job] = []
        while True:
            try:
                job = self._work_queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    def _initializer_failed(self) -> None:
        with self._shutdown_lock:
            self._broken = (
                "A thread initializer failed, the thread pool is not usable anymore"
            )
            for job in self._take_queued_jobs():
                job.future.set_exception(BrokenThreadPool(self._broken))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                for job in self._take_queued_jobs():
                    job.future.cancel()
            self._work_queue.put(None)
        if wait:
            for worker in list(self._threads):
                worker.join()
        registry.unregister(self)
