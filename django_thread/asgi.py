"""Request threads for ASGI: ``CONN_MAX_AGE`` without a connection leak.

Under ASGI, Django runs a request's sync code (sync views, sync middleware,
the receivers of ``request_started`` and ``request_finished``, the ORM
calls of async views through ``sync_to_async``) on one thread per request:
``ASGIHandler`` enters asgiref's ``ThreadSensitiveContext``, which creates
a ``ThreadPoolExecutor(max_workers=1)`` on the first thread-sensitive call
and shuts it down when the request ends. Nothing closes the connections
that thread opened: with ``CONN_MAX_AGE`` above zero, Django's
``request_finished`` receiver keeps them for the next request, which never
comes on that thread, and they stay open until the garbage collector
breaks the dead wrappers' reference cycles. Hence Django's advice to turn
persistent connections off under ASGI.

:func:`wrap` gives each request, instead, one of a set of long-lived
request threads, through asgiref's ``ThreadSensitiveContext(executor=...)``
(public from asgiref 3.13; see ``internals.thread_sensitive_context``).
Django's own signals still run on it, so ``CONN_MAX_AGE`` and
``CONN_HEALTH_CHECKS`` work as under WSGI: a connection is reused by the
next request the thread serves. A thread is started by django_thread
(:func:`~django_thread.workers.start_worker`), so when it is retired (too
many idle threads, shutdown, interpreter exit) it closes its connections
itself; none outlives its thread. Between requests, a transaction the
request left open is rolled back, so that it cannot poison the next one.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent import futures
from typing import Any, TypeVar

from django_thread import registry
from django_thread.internals import thread_sensitive_context
from django_thread.lifecycle import ensure_app_installed
from django_thread.thread_connections import (
    discard_leaked_transactions,
    give_back_pooled_connections,
    unit_connections,
)
from django_thread.workers import start_worker

__all__ = ["RequestThreads", "RequestThreadsApplication", "wrap"]

logger = logging.getLogger("django_thread")

_R = TypeVar("_R")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApplication = Callable[[Scope, Receive, Send], Awaitable[None]]

_WorkItem = tuple[
    "futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]
]

_cpu_count = getattr(os, "process_cpu_count", os.cpu_count)  # 3.13 added it


def _serve(work_queue: queue.SimpleQueue[_WorkItem | None]) -> None:
    """A request thread's loop: one call at a time, until it is retired (None)."""
    while True:
        item = work_queue.get()
        if item is None:
            return
        future, fn, args, kwargs = item
        del item
        if not future.set_running_or_notify_cancel():
            continue
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
            del exc  # break the cycle through the traceback
        else:
            future.set_result(result)
            del result
        del future, fn, args, kwargs


class RequestThread(futures.Executor):
    """A long-lived thread that runs one request's thread-sensitive code at a time.

    asgiref asks of an executor given to ``ThreadSensitiveContext`` that
    it "run one call at a time on one thread"; this one does, and outlives
    the request. Its connections honour ``CONN_MAX_AGE`` while it lives
    (``persistent_connections=False``) and close when it ends.
    """

    def __init__(self, name: str, generation: int) -> None:
        self.generation = generation
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self.thread = start_worker(
            name, _serve, (self._queue,), logger, persistent_connections=False
        )
        # Dropped without being retired (its RequestThreads was collected):
        # the thread ends anyway, as an executor's workers do when their
        # executor is collected; otherwise exit would wait for it forever.
        self._finalizer = weakref.finalize(self, self._queue.put, None)

    def forget(self) -> None:
        """In a forked child, where the thread does not exist: never wake it."""
        self._finalizer.detach()

    def submit(
        self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any
    ) -> futures.Future[_R]:
        future: futures.Future[_R] = futures.Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def retire(self) -> threading.Thread:
        """Let the thread end (closing its connections) once its queue is done."""
        self._queue.put(None)
        return self.thread


def _end_request() -> None:
    """On the request thread, after a request: roll back what it left open.

    And give Django's native pool back what a late ``request_finished``
    receiver took from it, as a unit's end does.
    """
    try:
        leaked = discard_leaked_transactions(unit_connections())
        give_back_pooled_connections()
    except Exception:
        logger.exception("Ending an ASGI request's transactions failed")
        return
    if leaked:
        logger.warning(
            "An ASGI request left a transaction open on %s; it was rolled "
            "back and the connection discarded",
            ", ".join(repr(alias) for alias in leaked),
        )


class RequestThreads:
    """The request threads of one wrapped application.

    A request takes an idle thread, or starts one: there are as many
    threads as requests in flight, as with asgiref's thread per request.
    Afterwards the thread waits for the next request, unless
    ``max_idle`` threads already do; then it is retired. The registry
    (:mod:`django_thread.registry`) retires every idle one at interpreter
    exit and before a test runner drops its databases, and a forked child
    starts with none.
    """

    def __init__(self, max_idle: int | None = None) -> None:
        if max_idle is None:
            max_idle = min(32, (_cpu_count() or 1) + 4)
        if max_idle < 0:
            raise ValueError("max_idle must be 0 or more")
        self.max_idle = max_idle
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._idle: list[RequestThread] = []
        self._generation = 0
        self._shutdown = False
        #: Requests running now: what the exit report counts.
        self._busy = 0
        registry.register(self)

    def take(self) -> RequestThread:
        """An idle thread, the one most recently used (its connections are warm)."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the request threads were shut down")
            self._busy += 1
            if self._idle:
                return self._idle.pop()
            generation = self._generation
        return RequestThread(f"django_thread.asgi_{next(self._counter)}", generation)

    def give_back(self, thread: RequestThread) -> None:
        with self._lock:
            self._busy -= 1
            if (
                not self._shutdown
                and thread.generation == self._generation
                and len(self._idle) < self.max_idle
            ):
                self._idle.append(thread)
                return
        thread.retire()

    # --- The registry's hooks (see django_thread.registry.WorkerPool) ---

    def _pending_work(self) -> registry.PendingWork:
        """Requests in flight; a request thread queues nothing."""
        return registry.PendingWork("ASGI request threads", self._busy, 0)

    def _retire_workers(self) -> list[threading.Thread]:
        """Retire the idle threads; busy ones retire when their request ends."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        return [thread.retire() for thread in idle]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
        retired = self._retire_workers()
        if wait:
            for thread in retired:
                thread.join()
        registry.unregister(self)

    def _after_fork_in_child(self) -> None:
        """The parent's threads do not exist here; new requests start new ones."""
        self._lock = threading.Lock()  # another thread may have held it
        for thread in self._idle:
            thread.forget()
        self._idle = []
        self._busy = 0
        self._generation += 1


class RequestThreadsApplication:
    """An ASGI application whose requests run their sync code on request threads."""

    def __init__(self, application: ASGIApplication, threads: RequestThreads) -> None:
        self.application = application
        self.threads = threads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.application(scope, receive, send)
            return
        thread = self.threads.take()
        try:
            async with thread_sensitive_context(thread):
                await self.application(scope, receive, send)
        finally:
            # Queued, not awaited: it runs before anything of the next
            # request the thread serves, however this one ended.
            thread.submit(_end_request)
            self.threads.give_back(thread)


def wrap(
    application: ASGIApplication, *, max_idle_threads: int | None = None
) -> RequestThreadsApplication:
    """Run each request's sync code on a request thread of django_thread's.

    In ``asgi.py``::

        application = django_thread.asgi.wrap(get_asgi_application())

    ``max_idle_threads`` threads (default: ``min(32, CPUs + 4)``, the
    executor's default size) wait for requests between them, each keeping
    its connections per ``CONN_MAX_AGE``; more threads run while more
    requests are in flight, and end, closing their connections, once idle.
    Lifespan events pass through untouched. A task a request starts must
    end with it: with asgiref 3.13 its thread-sensitive calls after the
    response raise ``RuntimeError`` (older asgiref runs them on a thread of
    its own, which no one closes).
    """
    ensure_app_installed()
    return RequestThreadsApplication(application, RequestThreads(max_idle_threads))
