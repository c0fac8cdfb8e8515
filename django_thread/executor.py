"""A ``ThreadPoolExecutor`` whose every submitted call is one unit of work.

This module follows CPython 3.13's ``Lib/concurrent/futures/thread.py``:
the same ``_WorkItem``, the same ``_worker`` loop holding only a weak
reference to its executor, the same attribute names and the same
``submit``/``shutdown`` semantics. A reader who knows that file should read
this one as a list of differences, each for a reason:

- a work item runs its call as a unit of work (:func:`run_unit`) in a copy
  of the submitter's context, and sets its future only after the unit's
  cleanup;
- the worker is started by :func:`django_thread.workers.start_worker`, a
  daemon thread that closes its connections when it ends, whatever ends it
  (the stdlib gives no hook to run code in a worker as it exits, so with
  ``CONN_MAX_AGE`` above zero its connections would wait for the garbage
  collector);
- exit is run by :mod:`django_thread.registry`, like the stdlib's
  ``_python_exit`` but for daemon workers, and so is fork: a forked child
  gets a new generation of workers (the stdlib's pool is dead in a child);
- each worker is handed its generation's queue and idle semaphore, instead
  of reading them from the executor, so that a new generation (after a fork,
  or :func:`~django_thread.registry.release_connections`) never mixes with
  the workers of the previous one.

It subclasses ``concurrent.futures.ThreadPoolExecutor`` so that ``isinstance``
checks (asyncio's ``set_default_executor``) pass, but never runs the stdlib's
``__init__``: see :meth:`ThreadPoolExecutor._new_generation`.
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
from django_thread.future import Future, log_unretrieved
from django_thread.lifecycle import ensure_app_installed, run_unit
from django_thread.workers import start_worker

# concurrent.futures logs worker crashes here; so do we, for parity.
futures_logger = logging.getLogger("concurrent.futures")
logger = logging.getLogger("django_thread")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_cpu_count = getattr(os, "process_cpu_count", os.cpu_count)  # 3.13 added it


class _WorkItem:
    """One submitted call; as the stdlib's, plus its sender and context."""

    __slots__ = ("future", "sender", "fn", "args", "kwargs", "snapshot")

    def __init__(
        self,
        future: Future[Any],
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
            self.future.failed_call = _describe_call(self.fn)
            # Break the reference cycle through the exception's traceback.
            self = None  # type: ignore[assignment]
        else:
            self.future.set_result(result)


def _describe_call(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{name} (run by {threading.current_thread().name})"


def _worker(
    executor_reference: weakref.ref[ThreadPoolExecutor],
    work_queue: queue.SimpleQueue[_WorkItem | None],
    idle_semaphore: threading.Semaphore,
    running: set[_WorkItem],
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    if initializer is not None:
        try:
            run_unit(_sender_of(executor_reference), initializer, initargs, {})
        except BaseException:
            futures_logger.critical("Exception in initializer:", exc_info=True)
            executor = executor_reference()
            if executor is not None:
                executor._initializer_failed()
            return
    while True:
        try:
            work_item = work_queue.get_nowait()
        except queue.Empty:
            # Count this worker idle, so that submit() does not start another.
            idle_semaphore.release()
            work_item = work_queue.get(block=True)
        if work_item is not None:
            running.add(work_item)  # counted by _pending_work, for the exit report
            work_item.run()
            running.discard(work_item)
            del work_item  # drop the item's references before waiting again
            # A future thrown away by its submitter usually dies just now.
            log_unretrieved()
            continue
        executor = executor_reference()
        # Exit if:
        #   - the interpreter is exiting (the registry drains pools), OR
        #   - the executor that owns the worker has been collected, OR
        #   - the executor has been shut down, OR
        #   - the executor moved on to a new generation of workers (its
        #     queue is not this one any more): its workers were retired.
        if executor is None or executor._work_queue is not work_queue:
            work_queue.put(None)  # wake the next worker of this generation
            return
        if executor._shutdown or registry.exiting():
            executor._shutdown = True
            work_queue.put(None)
            return
        del executor


def _sender_of(executor_reference: weakref.ref[ThreadPoolExecutor]) -> Any:
    executor = executor_reference()
    return type(executor) if executor is not None else ThreadPoolExecutor


class ThreadPoolExecutor(futures.ThreadPoolExecutor):
    """A drop-in ``concurrent.futures.ThreadPoolExecutor`` for Django code.

    Each submitted call runs in a worker as one unit of work: Django's
    ``request_started`` before it, ``request_finished`` after it, a leaked
    transaction rolled back, connections kept or closed per ``CONN_MAX_AGE``.
    The future completes only after that cleanup. Each call runs in a copy of
    the submitter's context (``DJANGO_THREAD_COPY_CONTEXT``). When the
    executor shuts down, each worker closes its connections before it exits.

    ``persistent_connections=True`` keeps each worker's connections open
    across calls until the worker ends, whatever ``CONN_MAX_AGE`` says;
    ``False`` honours ``CONN_MAX_AGE``; ``None`` (the default) follows
    ``DJANGO_THREAD_PERSISTENT_CONNECTIONS``.
    """

    # Used to assign unique thread names when thread_name_prefix is not supplied.
    _counter = itertools.count().__next__

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        persistent_connections: bool | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (_cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        ensure_app_installed()
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or (
            f"ThreadPoolExecutor-{self._counter()}"
        )
        # typeshed types these three for the stdlib's own work items, hence
        # the ignores (see _new_generation for why the names are the stdlib's).
        self._initializer = initializer  # type: ignore[assignment]
        self._initargs = initargs
        self._persistent_connections = persistent_connections
        self._broken: str | bool = False  # type: ignore[assignment]
        self._shutdown = False
        #: Workers of earlier generations that may still be finishing work.
        self._retired_threads: set[threading.Thread] = set()
        self._shutdown_lock = threading.Lock()
        self._new_generation()
        registry.register(self)

    def _new_generation(self) -> None:
        """Fresh worker state: a new queue, no idle worker, no workers.

        The attribute names set here and in ``__init__`` are the stdlib's
        (CPython 3.10 to 3.13 ``ThreadPoolExecutor.__init__``), for code that
        introspects executors, but the state is this class's own: the
        stdlib's ``__init__`` is never run, and every stdlib method that
        reads this state is overridden here (a test checks it on each
        version).
        """
        self._work_queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()  # type: ignore[assignment]
        self._idle_semaphore = threading.Semaphore(0)
        self._threads: set[threading.Thread] = set()
        #: The items this generation's workers are running (not a stdlib name).
        self._running_items: set[_WorkItem] = set()

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
            future: Future[_T] = Future()
            work_item = _WorkItem(future, type(self), fn, args, kwargs, capture())
            self._work_queue.put(work_item)
            self._adjust_thread_count()
            return future

    def _adjust_thread_count(self) -> None:
        # If an idle worker is available, it takes the item: no new thread.
        if self._idle_semaphore.acquire(timeout=0):
            return

        # When the executor gets lost, the weakref callback wakes the workers.
        def weakref_cb(_: object, q: queue.SimpleQueue[Any] = self._work_queue) -> None:
            q.put(None)

        num_threads = len(self._threads)
        if num_threads < self._max_workers:
            thread = start_worker(
                f"{self._thread_name_prefix}_{num_threads}",
                _worker,
                (
                    weakref.ref(self, weakref_cb),
                    self._work_queue,
                    self._idle_semaphore,
                    self._running_items,
                    self._initializer,
                    self._initargs,
                ),
                futures_logger,
                self._persistent_connections,
            )
            self._threads.add(thread)

    def _take_queued_work_items(self) -> list[_WorkItem]:
        """Empty the queue: the items no worker has started, without wake-ups."""
        work_items: list[_WorkItem] = []
        while True:
            try:
                work_item = self._work_queue.get_nowait()
            except queue.Empty:
                return work_items
            if work_item is not None:
                work_items.append(work_item)

    def _initializer_failed(self) -> None:
        with self._shutdown_lock:
            self._broken = (
                "A thread initializer failed, the thread pool is not usable anymore"
            )
            for work_item in self._take_queued_work_items():
                work_item.future.set_exception(BrokenThreadPool(self._broken))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                cancelled = self._take_queued_work_items()
                for work_item in cancelled:
                    work_item.future.cancel()
                if cancelled and registry.exiting():
                    logger.warning(
                        "%s: %d queued job(s) cancelled at exit "
                        "(DJANGO_THREAD_CANCEL_AT_EXIT)",
                        self._thread_name_prefix,
                        len(cancelled),
                    )
            # Wake the workers blocked in get(); they exit in turn.
            self._work_queue.put(None)
            threads = self._threads | self._retired_threads
        if wait:
            for thread in threads:
                thread.join()
            # Without waiting, the executor stays registered: its workers
            # still run the queued work, and interpreter exit waits for them.
            registry.unregister(self)
        log_unretrieved()

    # --- The registry's hooks (see django_thread.registry.WorkerPool) ---

    def _pending_work(self) -> registry.PendingWork:
        # The queue also holds the wake-up None that shutdown() puts there.
        queued = self._work_queue.qsize() - (1 if self._shutdown else 0)
        return registry.PendingWork(
            str(self._thread_name_prefix), len(self._running_items), max(0, queued)
        )

    def _retire_workers(self) -> list[threading.Thread]:
        """Start a new generation; the current workers exit once idle.

        Queued items move to the new queue, where new workers take them:
        only the items already running keep a retired worker busy.
        """
        with self._shutdown_lock:
            retired = list(self._threads)
            if not retired:
                return []
            old_queue = self._work_queue
            pending = self._take_queued_work_items()
            self._retired_threads = {
                thread for thread in self._retired_threads if thread.is_alive()
            }
            self._retired_threads.update(retired)
            self._new_generation()
            old_queue.put(None)
            for work_item in pending:
                self._work_queue.put(work_item)
                self._adjust_thread_count()
            if self._shutdown:
                self._work_queue.put(None)  # the new workers exit once done
        return retired

    def _after_fork_in_child(self) -> None:
        """In a forked child: new workers for new work; the parent's is left alone.

        Work queued or running at the fork is the parent's to run. Its
        futures stay pending here, as the standard library's do: completing
        one would take locks a parent thread may have held at the fork (the
        rule is in :mod:`django_thread.registry`).
        """
        self._shutdown_lock = threading.Lock()
        self._retired_threads = set()
        self._new_generation()
