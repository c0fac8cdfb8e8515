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

This module is the only one in the package that touches ``connections``,
transactions or the request signals: the thread, executor and tasks modules
only *use* it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ContextDecorator, contextmanager
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from django.apps import apps
from django.core.cache import close_caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connections, reset_queries
from django.db.transaction import TransactionManagementError
from django.dispatch import Signal

from django_thread import forking, sharing
from django_thread.internals import (
    close_in_memory_database_handle,
    forget_connection,
    in_atomic_block,
    initialized_connections,
    is_connected,
    keep_open_until_thread_ends,
    lend_connection,
    rollback_driver_connection,
    shared_from_another_thread,
)

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("django_thread")

_R = TypeVar("_R")
_F = TypeVar("_F", bound=Callable[..., Any])

_scope = threading.local()


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


def own_connections() -> list[BaseDatabaseWrapper]:
    """This thread's connections, without those another thread lent it.

    ``LiveServerTestCase``'s server threads, and units while a test shares
    its connections (:mod:`django_thread.sharing`), run on the test
    thread's connection: closing it, rolling it back or dropping it from
    this thread's handler would break the test. Cleanup only ever picks
    connections from here (or from :func:`unit_connections`).
    """
    return [c for c in initialized_connections() if not shared_from_another_thread(c)]


def _in_transaction(connection: BaseDatabaseWrapper) -> bool:
    """Whether a transaction is open: ``atomic()``, or autocommit turned off.

    Autocommit that differs from the alias's ``AUTOCOMMIT`` setting is the
    same test Django's ``close_old_connections`` makes before it closes the
    connection (and with it, rolls the transaction back).
    """
    if in_atomic_block(connection):
        return True
    return (
        is_connected(connection)
        and connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]
    )


def atomic_block_open(alias: str) -> bool:
    """Whether this thread is inside ``transaction.atomic()`` on ``alias``.

    Never connects: asking the database would open a connection in the
    caller just to learn that it is in autocommit mode.
    """
    return in_atomic_block(connections[alias])


def discard_connection(connection: BaseDatabaseWrapper) -> None:
    """Roll back and throw away a connection whose transaction was leaked.

    ``BaseDatabaseWrapper.close()`` inside an atomic block closes the socket
    but leaves the wrapper "in a transaction" forever; ``rollback()`` refuses
    to run inside one. So roll back on the driver connection, close it (a
    pooled connection goes back to the pool), and drop the wrapper from this
    thread's handler so the next query builds a fresh one.
    """
    try:
        rollback_driver_connection(connection)
    except Exception:
        logger.debug("Rollback of leaked transaction failed", exc_info=True)
    try:
        _close(connection)
    except Exception:
        logger.debug("Closing connection %r failed", connection.alias, exc_info=True)
    forget_connection(connection.alias)
    connected = getattr(_scope, "connected", None)
    if connected is not None:
        connected.pop(connection.alias, None)


def _close(connection: BaseDatabaseWrapper) -> None:
    """Close for good: the wrapper is about to be dropped from its thread."""
    connection.close()
    if is_connected(connection):
        # SQLite's in-memory database refused: see the helper.
        close_in_memory_database_handle(connection)


def discard_leaked_transactions(
    opened: Sequence[BaseDatabaseWrapper] | None = None,
) -> list[str]:
    """Roll back every transaction a unit left open; return the aliases."""
    leaked = []
    for connection in own_connections() if opened is None else opened:
        try:
            is_leaked = _in_transaction(connection)
        except Exception:
            # The state cannot even be read: the connection is beyond use.
            is_leaked = True
        if is_leaked:
            leaked.append(connection.alias)
            discard_connection(connection)
    return leaked


def close_thread_connections() -> None:
    """Close every connection this thread opened, for threads that are ending.

    Without this, a finished thread's connections stay open until the garbage
    collector happens to break the wrapper's reference cycles.
    """
    discard_leaked_transactions()
    for connection in own_connections():
        try:
            _close(connection)
        except Exception:
            logger.warning(
                "Closing connection %r failed", connection.alias, exc_info=True
            )


def persistent_connections_wanted(override: bool | None) -> bool:
    """``override`` when given, else ``DJANGO_THREAD_PERSISTENT_CONNECTIONS``."""
    if override is not None:
        return override
    from django_thread.conf import settings

    return bool(settings.DJANGO_THREAD_PERSISTENT_CONNECTIONS)


@contextmanager
def owned_thread(persistent_connections: bool | None = None) -> Iterator[None]:
    """The whole life of a thread django_thread starts: the one place it is marked.

    Every executor worker, task worker and :class:`~django_thread.Thread`
    body runs inside this. Until the thread ends its connections are held
    for :mod:`django_thread.forking`, so that a forked child never closes
    them under the parent. When it ends, whatever ends it, they are closed:
    no later unit can reuse them, and without this they would stay open
    until the garbage collector breaks the wrappers' reference cycles.

    That guaranteed end is what makes persistent connections safe here and
    nowhere else: with ``persistent_connections`` on (``None``: the
    ``DJANGO_THREAD_PERSISTENT_CONNECTIONS`` setting), a connection this
    thread opens is kept across its units until the thread ends (see
    :func:`track_owned_connection`). A thread django_thread does not own
    never gets the mark, so ``unit_of_work`` there keeps nothing that
    ``CONN_MAX_AGE`` would close: there is no owner to close it later.
    """
    _scope.persistent = persistent_connections_wanted(persistent_connections)
    _scope.connected = {}
    forking.track_this_thread()
    try:
        yield
    finally:
        _scope.persistent = False
        _scope.connected = None
        close_thread_connections()
        forking.untrack_this_thread()


def track_owned_connection(
    sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any
) -> None:
    """``connection_created`` receiver: on an owned thread, note the wrapper.

    Noting it lets each unit's end look at the wrappers this thread ever
    connected instead of walking every alias (see :func:`unit_connections`).

    On a persistent thread it also lifts the connection's age limit. Only
    that goes: everything else in Django's per-request housekeeping still
    applies at each unit's end (a connection with errors that fails
    ``is_usable()``, or with autocommit left off, is closed, and
    ``CONN_HEALTH_CHECKS`` re-checks it before its next use), and so do the
    unit's own repairs: a leaked transaction discards the connection, a
    failed unit closes it (``DJANGO_THREAD_CLOSE_ON_ERROR``), and the next
    unit opens a fresh one, which comes through here again. An alias on
    Django's native pool is left alone: it has no age (Django requires
    ``CONN_MAX_AGE = 0`` there), and giving its connection back to the pool
    at each unit's end is already cheap.
    """
    connected = getattr(_scope, "connected", None)
    if connected is None:
        return  # not a thread django_thread owns
    if shared_from_another_thread(connection):
        return  # lent by a test (django_thread.sharing): never this thread's
    connected[connection.alias] = connection
    if _scope.persistent and not connection.settings_dict["OPTIONS"].get("pool"):
        keep_open_until_thread_ends(connection)


def unit_connections() -> Sequence[BaseDatabaseWrapper]:
    """The wrappers a unit ending on this thread may have left in a transaction.

    On a thread django_thread owns, those are the wrappers that connected
    on it, as :func:`track_owned_connection` noted them: a transaction
    needs a connection, and a wrapper is private to its thread and first
    connects on it, so no other wrapper can hold one. Reading that dict
    spares every unit a walk over all aliases, through the thread-critical
    ``asgiref.local.Local`` that holds them, which costs more than the rest
    of the unit's own bookkeeping. Elsewhere, every initialized wrapper.
    """
    connected = getattr(_scope, "connected", None)
    if connected is None:
        return own_connections()
    return list(connected.values())


def _refuse_inside_caller_transaction() -> None:
    """Raise rather than let a unit's cleanup end the caller's transaction.

    A unit that starts in the caller's own thread runs ``request_started``,
    whose ``close_old_connections`` closes a connection inside an open
    ``atomic()`` block, and closes (so rolls back) one whose autocommit was
    turned off with rows written, silently. Both are refused before
    anything runs; units on threads django_thread starts never need this.
    """
    opened = own_connections()
    in_atomic = [c.alias for c in opened if in_atomic_block(c)]
    if in_atomic:
        raise TransactionManagementError(
            "unit_of_work() cannot start inside transaction.atomic() "
            f"(open on {', '.join(map(repr, in_atomic))}): its cleanup "
            "would close the enclosing transaction. Start the unit "
            "outside the atomic block."
        )
    manual = [c.alias for c in opened if _in_transaction(c)]
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
    for receiver, response in signal.send_robust(sender=sender, **named):
        if isinstance(response, Exception):
            logger.error(
                "Receiver %r of %s raised; the work goes on",
                receiver,
                about,
                exc_info=response,
            )


def _run_direct_cleanup(action: Any) -> None:
    try:
        action()
    except Exception:
        logger.error("Connection cleanup %r raised", action, exc_info=True)


def _lent_here() -> list[BaseDatabaseWrapper]:
    """The connections another thread lent this one, walking aliases only if needed.

    On a thread django_thread owns, only :mod:`django_thread.sharing` lends
    connections, and it knows which; elsewhere (a live server's threads),
    look at every initialized wrapper.
    """
    if getattr(_scope, "connected", None) is not None:
        return sharing.borrowed()
    return [c for c in initialized_connections() if shared_from_another_thread(c)]


def _hide(lent: list[BaseDatabaseWrapper]) -> None:
    """Take lent connections out of this thread's handler, for Django's receivers.

    ``close_old_connections`` would close a connection another thread lent
    this one: inside ``TestCase`` the test's looks "in a transaction" to it.
    (Django's test client disconnects that receiver around a request for
    the same reason.)
    """
    for connection in lent:
        forget_connection(connection.alias)


def _put_back(lent: list[BaseDatabaseWrapper]) -> None:
    """Undo :func:`_hide`; a connection a receiver opened meanwhile is closed."""
    if not lent:
        return
    own = {c.alias: c for c in initialized_connections()}
    for connection in lent:
        if connection.alias in own:
            _run_direct_cleanup(partial(_close, own[connection.alias]))
        lend_connection(connection.alias, connection)


def _djangos_housekeeping(
    signal: Signal,
    about: str,
    sender: Any,
    send_signals: bool,
    *cleanups: Callable[[], object],
) -> None:
    """Django's receivers of a request signal, or, with signals off, its cleanups.

    ``cleanups`` are what Django's own receivers of ``signal`` do, called
    directly when ``DJANGO_THREAD_SEND_SIGNALS`` is off. Either way, the
    connections another thread lent this one are out of their sight (see
    :func:`_hide`).
    """
    lent = _lent_here()
    _hide(lent)
    try:
        if send_signals:
            send_robustly(signal, sender, about)
        else:
            for cleanup in cleanups:
                _run_direct_cleanup(cleanup)
    finally:
        _put_back(lent)


def start_unit(sender: Any, send_signals: bool | None = None) -> None:
    """What Django does when a request arrives, in this thread.

    ``send_signals`` is ``DJANGO_THREAD_SEND_SIGNALS`` as the unit read it
    when it started (None: read it now).
    """
    if send_signals is None:
        send_signals = _send_signals()
    _djangos_housekeeping(
        request_started,
        "request_started",
        sender,
        send_signals,
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
    leaked = discard_leaked_transactions(opened) if opened else None
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
        close_old_connections,
        close_caches,
    )
    if failed:
        from django_thread.conf import settings

        if settings.DJANGO_THREAD_CLOSE_ON_ERROR:
            # A connection may be mid-protocol after an interrupted query.
            for connection in own_connections():
                try:
                    connection.close()
                except Exception:
                    logger.debug("Closing %r failed", connection.alias, exc_info=True)


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
        depth = getattr(_scope, "depth", 0)
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
    ``sender`` is the ``sender`` of the request signals (default:
    ``unit_of_work`` itself). A unit nested in another unit on the same
    thread is part of the outer one and does nothing of its own. Entering a
    unit while this thread has a transaction open (inside
    ``transaction.atomic()``, or with autocommit turned off) raises
    ``TransactionManagementError``: the cleanup would otherwise close or
    roll back the caller's transaction.
    """
    if func is None:
        return UnitOfWork(sender)
    if not callable(func):
        raise TypeError(
            f"unit_of_work() takes a function to decorate, not {func!r}; "
            "pass a sender by keyword: unit_of_work(sender=...)"
        )
    return UnitOfWork(sender)(func)
