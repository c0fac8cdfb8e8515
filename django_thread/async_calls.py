"""Sync calls awaited from async code, each one unit of work on a pool of ours.

``asyncio.to_thread`` and asgiref's ``sync_to_async(thread_sensitive=False)``
run the call on an executor thread (the event loop's default executor)
that no request lifecycle ever reaches: a connection the call opens stays
open for the life of that thread, whatever ``CONN_MAX_AGE`` says, a
transaction it leaks poisons every later call on the thread, and a
connection taken from Django's native pool is never given back. The two
drop-ins here run the same call as a unit of work
(:func:`~django_thread.lifecycle.run_unit`) on one process-wide
:class:`~django_thread.ThreadPoolExecutor`, in a copy of the caller's
context, as asyncio does.

``sync_to_async`` with ``thread_sensitive=True`` (the default), or with an
executor of the caller's, is asgiref's own, unchanged: thread-sensitive code
runs on the request's thread, which :mod:`django_thread.asgi` looks after.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent import futures
from typing import Any, ParamSpec, TypeVar, cast, overload

from asgiref.sync import sync_to_async as asgiref_sync_to_async

from django_thread import registry
from django_thread.executor import ThreadPoolExecutor

__all__ = ["sync_to_async", "to_thread"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_pool: ThreadPoolExecutor | None = None
#: Every call takes it, so a parent thread may hold it at a fork.
_pool_lock = threading.Lock()

registry.new_lock_in_forked_child(globals(), "_pool_lock")


def shared_pool() -> ThreadPoolExecutor:
    """The pool both drop-ins share, as asyncio's share the default executor.

    Created on first use, never at import: a module that decorates a
    function with ``sync_to_async`` may be imported before the app registry
    is ready. Its size is the standard library's default.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(thread_name_prefix="django_thread.to_thread")
        return _pool


class _SharedPool(futures.Executor):
    """The shared pool, looked up at each call: asgiref takes an executor up front."""

    def submit(
        self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any
    ) -> futures.Future[_R]:
        return shared_pool().submit(fn, *args, **kwargs)


async def to_thread(
    func: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
) -> _R:
    """A drop-in ``asyncio.to_thread``: the call is one unit of work on our pool.

    The pool runs it in a copy of this task's context (see
    ``django_thread.context``), so context variables reach it as they do
    through ``asyncio.to_thread``, and so do the active language and time
    zone. With ``DJANGO_THREAD_COPY_CONTEXT`` off ("the standard library's
    behaviour"), the context is still copied, as asyncio copies it, without
    the language and time zone.
    """
    from django_thread.conf import settings

    loop = asyncio.get_running_loop()
    pool = shared_pool()
    if settings.DJANGO_THREAD_COPY_CONTEXT:
        future = pool.submit(func, *args, **kwargs)
    else:
        call = functools.partial(func, *args, **kwargs)
        future = pool.submit(contextvars.copy_context().run, call)
    return await asyncio.wrap_future(future, loop=loop)


@overload
def sync_to_async(
    *,
    thread_sensitive: bool = True,
    executor: futures.ThreadPoolExecutor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]: ...


@overload
def sync_to_async(
    func: Callable[_P, _R],
    *,
    thread_sensitive: bool = True,
    executor: futures.ThreadPoolExecutor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[_P, Coroutine[Any, Any, _R]]: ...


def sync_to_async(
    func: Callable[_P, _R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: futures.ThreadPoolExecutor | None = None,
    context: contextvars.Context | None = None,
) -> (
    Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]
    | Callable[_P, Coroutine[Any, Any, _R]]
):
    """A drop-in for asgiref's ``sync_to_async``, also as a decorator.

    With ``thread_sensitive=False`` and no ``executor``, where asgiref
    would use the event loop's default executor, each call is one unit of
    work on the pool :func:`to_thread` uses. Otherwise it is asgiref's.
    """
    if not thread_sensitive and executor is None:
        # asgiref only ever calls submit() on it (via run_in_executor).
        executor = cast(futures.ThreadPoolExecutor, _SharedPool())
    if func is None:
        return asgiref_sync_to_async(
            thread_sensitive=thread_sensitive, executor=executor, context=context
        )
    return asgiref_sync_to_async(
        func, thread_sensitive=thread_sensitive, executor=executor, context=context
    )
