"""The unit of work: Django's request lifecycle, run around code that is not a request.

Inside a web request Django sends ``request_started`` before the view and
``request_finished`` after the response, and its own receivers do the
connection housekeeping: ``close_old_connections`` drops connections that
outlived ``CONN_MAX_AGE`` or broke, re-arms ``CONN_HEALTH_CHECKS``,
``reset_queries`` empties the debug query log, ``close_caches`` lets cache
clients release sockets. A thread that is not a request gets none of this,
so its connections live forever and die on the server's schedule instead of
Django's.

:class:`unit_of_work` sends the same signals, in the current thread, around
one unit of work. It also repairs what Django's handlers cannot: a unit that
leaves an ``atomic()`` block open (Django would close the socket but keep the
wrapper in a transaction state, so every later query on that thread fails
with "the connection is closed"), and a unit that raised mid-query.

This module sends the request signals; what happens to the thread's
connections themselves (which may be touched, how a leaked transaction is
discarded, what a thread closes when it ends) is in
:mod:`django_thread.thread_connections`. The thread, executor and tasks
modules only *use* the two.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import ContextDecorator
from types import TracebackType
from typing import Any, TypeVar, overload

from django.apps import apps
from django.core.cache import close_caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, reset_queries
from django.db.transaction import TransactionManagementError
from django.dispatch import Signal

from django_thread import dispatch, sharing
from django_thread.internals import in_atomic_block
from django_thread.thread_connections import (
    close_after_failure,
    discard_leaked_transactions,
    give_back_pooled_connections,
    hide_lent_connections,
    in_transaction,
    put_back_lent_connections,
    run_direct_cleanup,
    uninspectable_connections,
    unit_connections,
    unlent_connections,
)

logger = logging.getLogger("django_thread")

_R = TypeVar("_R")
_F = TypeVar("_F", bound=Callable[..., Any])


class _UnitState(threading.local):
    #: How many units are open on this thread (nested ones do nothing).
    depth = 0
    #: ``DJANGO_THREAD_SEND_SIGNALS`` as the outermost open unit read it.
    send_signals = True


_scope = _UnitState()


def ensure_app_installed() -> None:
    """Fail in the caller, with the fix, rather than deep in a worker.

    The settings defaults and system checks live in the app, so using the
    classes without it would silently run on missing settings.
    """
    if not apps.is_installed("django_thread"):
        raise ImproperlyConfigured(
            "django_thread is not in INSTALLED_APPS. Add 'django_thread' to "
            "INSTALLED_APPS to use django_thread's threads and executors."
        )


def _refuse_inside_caller_transaction() -> None:
    """Raise rather than let a unit's cleanup end the caller's transaction.

    A unit that starts in the caller's own thread runs ``request_started``,
    whose ``close_old_connections`` closes a connection inside an open
    ``atomic()`` block, and closes (so rolls back) one whose autocommit was
    turned off with rows written, silently. Both are refused before
    anything runs; units on threads django_thread starts never need this.
    """
    opened = unlent_connections()
    in_atomic = [c.alias for c in opened if in_atomic_block(c)]
    if in_atomic:
        raise TransactionManagementError(
            "unit_of_work() cannot start inside transaction.atomic() "
            f"(open on {', '.join(map(repr, in_atomic))}): its cleanup "
            "would close the enclosing transaction. Start the unit "
            "outside the atomic block."
        )
    manual = [c.alias for c in opened if in_transaction(c)]
    if manual:
        raise TransactionManagementError(
            "unit_of_work() cannot start while autocommit is off "
            f"(transaction.set_autocommit(False) on {', '.join(map(repr, manual))}): "
            "its cleanup would close the connection and roll the open "
            "transaction back. Commit or roll back and turn autocommit on "
            "again before starting the unit."
        )


def send_robustly(signal: Any, sender: Any, about: str, **named: Any) -> None:
    """Send robustly: one failing receiver must not stop cleanup or the job.

    ``about`` names the signal (and what it concerns) in the log record of a
    receiver that raised.
    """
    for receiver, response in dispatch.send_robust(signal, sender, **named):
        if isinstance(response, Exception):
            logger.error(
                "Receiver %r of %s raised; the work goes on",
                receiver,
                about,
                exc_info=response,
            )


def _djangos_housekeeping(
    signal: Signal,
    about: str,
    sender: Any,
    send_signals: bool,
    unreadable: Collection[str],
    *cleanups: Callable[[], object],
) -> None:
    """Django's receivers of a request signal, or, with signals off, its cleanups.

    ``cleanups`` are what Django's own receivers of ``signal`` do, called
    directly when ``DJANGO_THREAD_SEND_SIGNALS`` is off. Either way, the
    connections another thread lent this one, and those named in
    ``unreadable``, are out of their sight (see
    :func:`~django_thread.thread_connections.hide_lent_connections`).
    """
    lent = hide_lent_connections(unreadable)
    try:
        if send_signals:
            send_robustly(signal, sender, about)
        else:
            for cleanup in cleanups:
                run_direct_cleanup(cleanup)
    finally:
        put_back_lent_connections(lent)


def start_unit(sender: Any, send_signals: bool | None = None) -> None:
    """What Django does when a request arrives, in this thread.

    ``send_signals`` is ``DJANGO_THREAD_SEND_SIGNALS`` as the unit read it
    when it started (None: read it now).
    """
    if send_signals is None:
        send_signals = _send_signals()
    unreadable = uninspectable_connections(unit_connections())
    _scope.unreadable = unreadable
    _djangos_housekeeping(
        request_started,
        "request_started",
        sender,
        send_signals,
        unreadable,
        reset_queries,
        close_old_connections,
    )
    sharing.borrow()


def finish_unit(sender: Any, failed: bool, send_signals: bool | None = None) -> None:
    """What Django does when a response is done, plus what it cannot repair."""
    if send_signals is None:
        send_signals = _send_signals()
    sharing.give_back()
    opened = unit_connections()
    unreadable = getattr(_scope, "unreadable", None) or {}
    _scope.unreadable = None
    if opened:
        unreadable = {**unreadable, **uninspectable_connections(opened)}
    leaked = discard_leaked_transactions(opened, unreadable) if opened else None
    if unreadable:
        # Say only this: nothing is known about these connections, and
        # nothing was done to them.
        logger.warning(
            "A unit of work sent by %r could not inspect its connection to "
            "%s; it was left as it was",
            sender,
            ", ".join(f"{alias!r} ({why})" for alias, why in unreadable.items()),
        )
    if leaked:
        logger.warning(
            "A unit of work sent by %r left a transaction open on %s; "
            "it was rolled back and the connection discarded",
            sender,
            ", ".join(repr(alias) for alias in leaked),
        )
    _djangos_housekeeping(
        request_finished,
        "request_finished",
        sender,
        send_signals,
        unreadable,
        close_old_connections,
        close_caches,
    )
    if failed:
        from django_thread.conf import settings

        if settings.DJANGO_THREAD_CLOSE_ON_ERROR:
            close_after_failure()
    give_back_pooled_connections()


def _send_signals() -> bool:
    """``DJANGO_THREAD_SEND_SIGNALS``, read once per unit, when it starts."""
    from django_thread.conf import settings

    return bool(settings.DJANGO_THREAD_SEND_SIGNALS)


def run_unit(
    sender: Any,
    fn: Callable[..., _R],
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    absorb_inner_units: bool = True,
) -> _R:
    """``fn(*args, **kwargs)`` as one unit, on a thread django_thread owns.

    The fast path for threads and executor workers: their constructors
    already checked that the app is installed, and a new thread or a worker
    between units is never inside a caller's transaction, so the checks
    :func:`unit_of_work` makes for foreign threads are skipped.
    ``unit_of_work`` blocks inside ``fn`` are absorbed into this unit (they
    do nothing of their own), unless ``absorb_inner_units=False``: a whole
    ``Thread.run()`` passes that, so that each loop iteration can be a unit.
    """
    if absorb_inner_units:
        _scope.depth = 1
    send_signals = _send_signals()
    failed = True
    start_unit(sender, send_signals)
    try:
        result = fn(*args, **(kwargs or {}))
        failed = False
        return result
    finally:
        if absorb_inner_units:
            _scope.depth = 0
        finish_unit(sender, failed, send_signals)


class UnitOfWork(ContextDecorator):
    """What :func:`unit_of_work` returns: the unit as a context manager.

    One instance may be entered by several threads at once (a decorated
    function is): the nesting depth is per thread, never on the instance.
    """

    def __init__(self, sender: Any = None) -> None:
        self.sender = sender if sender is not None else unit_of_work

    def __enter__(self) -> UnitOfWork:
        depth = _scope.depth
        if depth == 0:
            ensure_app_installed()
            _refuse_inside_caller_transaction()
            _scope.send_signals = _send_signals()
            start_unit(self.sender, _scope.send_signals)
        _scope.depth = depth + 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _scope.depth -= 1
        if _scope.depth == 0:
            finish_unit(self.sender, exc_type is not None, _scope.send_signals)


@overload
def unit_of_work(func: _F, /) -> _F: ...


@overload
def unit_of_work(*, sender: Any = None) -> UnitOfWork: ...


def unit_of_work(func: _F | None = None, /, *, sender: Any = None) -> _F | UnitOfWork:
    """Run a block as one unit of work: Django's request lifecycle around it.

    Use it where django_thread does not create the thread: the loop body of
    a long-running :class:`~django_thread.Thread` (one unit per iteration),
    a function run by asyncio's default executor, a third-party pool::

        while not stopping.is_set():
            with unit_of_work():
                process_next_batch()

    or as a decorator, with or without parentheses, as
    ``transaction.atomic`` is: ``@unit_of_work`` or ``@unit_of_work()``.
    ``sender`` (keyword-only) is the ``sender`` of the request signals (default:
    ``unit_of_work`` itself). A unit nested in another unit on the same
    thread is part of the outer one and does nothing of its own. Entering a
    unit while this thread has a transaction open (inside
    ``transaction.atomic()``, or with autocommit turned off) raises
    ``TransactionManagementError``: the cleanup would otherwise close or
    roll back the caller's transaction.
    """
    if func is None:
        return UnitOfWork(sender)
    if not callable(func) or isinstance(func, type):
        # A class is callable, but the decorated "function" would replace
        # it: @unit_of_work(Consumer) is a sender passed positionally.
        raise TypeError(
            f"unit_of_work() takes a function to decorate, not {func!r}: "
            f"sender is keyword-only, unit_of_work(sender={_name_of(func)})"
        )
    return UnitOfWork(sender)(func)


def _name_of(sender: Any) -> str:
    """How the user wrote ``sender``, for the corrected call in a message."""
    return getattr(sender, "__name__", None) or repr(sender)
