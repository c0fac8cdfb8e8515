"""A thread's database connections: which are its to touch, and how they end.

Django keeps one connection wrapper per alias per thread, and closes them
only from the request signals' receivers. This module is where django_thread
decides what happens to a thread's wrappers outside that: which of them a
unit's cleanup may touch at all (never one lent by another thread), how a
leaked transaction is rolled back and its wrapper discarded, what a thread
django_thread started closes when it ends, and which connections such a
thread keeps across units (persistent connections).

:mod:`django_thread.lifecycle` sends the signals and calls in here; nothing
else in the package closes, rolls back or drops a connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import connections

from django_thread import sharing
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


class _ThreadState(threading.local):
    #: On a thread django_thread owns: its connections are kept across units.
    persistent = False
    #: On a thread django_thread owns: the wrappers that connected on it, by
    #: alias (the same dict as its entry in :data:`_connected_by_thread`);
    #: None on any other thread.
    connected: dict[str, BaseDatabaseWrapper] | None = None


_scope = _ThreadState()
#: The one record of the connections of every thread django_thread owns, by
#: thread ident: each unit's end reads its own thread's entry, and a forked
#: child reads the other threads' (:mod:`django_thread.forking`). Holding the
#: wrappers here also keeps them alive until their thread ends and closes
#: them, so that the child, not the garbage collector, decides their fate.
_connected_by_thread: dict[int, dict[str, BaseDatabaseWrapper]] = {}


def unlent_connections() -> list[BaseDatabaseWrapper]:
    """This thread's connections, without those another thread lent it.

    A connection lent by a test's thread (``LiveServerTestCase``,
    :mod:`django_thread.sharing`) is the test's: cleanup never touches it.
    """
    return [c for c in initialized_connections() if not shared_from_another_thread(c)]


def in_transaction(connection: BaseDatabaseWrapper) -> bool:
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
    connected = _scope.connected
    if connected is not None:
        connected.pop(connection.alias, None)


def _close(connection: BaseDatabaseWrapper) -> None:
    """Close for good: the wrapper is about to be dropped from its thread."""
    connection.close()
    if is_connected(connection):
        # SQLite's in-memory database refused: see the helper.
        close_in_memory_database_handle(connection)


def uninspectable_connections(
    candidates: Sequence[BaseDatabaseWrapper],
) -> dict[str, str]:
    """The open connections whose state cannot be read now, with the reason.

    Reading whether a connection is in a transaction goes through
    ``ensure_connection()``, which a test framework may forbid: pytest-django
    replaces it, in every thread, during a test without database access,
    while a worker still holds the connection an earlier test made it open.
    Nothing is known about such a connection, so nothing is done to it, and
    it is kept out of Django's housekeeping, which would raise on it.
    """
    unreadable = {}
    for connection in candidates:
        if not is_connected(connection):
            continue
        try:
            connection.get_autocommit()
        except Exception as exc:
            unreadable[connection.alias] = f"{type(exc).__name__}: {exc}"
    return unreadable


def discard_leaked_transactions(
    opened: Sequence[BaseDatabaseWrapper] | None = None,
    skip: Collection[str] = (),
) -> list[str]:
    """Roll back every transaction a unit left open; return the aliases.

    ``skip`` names connections whose state cannot be read (see
    :func:`uninspectable_connections`), unless an ``atomic()`` block, which
    is read without the database, shows them in a transaction.
    """
    leaked = []
    for connection in unlent_connections() if opened is None else opened:
        if connection.alias in skip and not in_atomic_block(connection):
            continue
        if in_transaction(connection):
            leaked.append(connection.alias)
            discard_connection(connection)
    return leaked


def close_thread_connections() -> None:
    """Close every connection this thread opened, for threads that are ending.

    Without this, a finished thread's connections stay open until the garbage
    collector happens to break the wrapper's reference cycles.
    """
    unlent = unlent_connections()
    discard_leaked_transactions(unlent, skip=uninspectable_connections(unlent))
    for connection in unlent_connections():
        try:
            _close(connection)
        except Exception:
            logger.warning(
                "Closing connection %r failed", connection.alias, exc_info=True
            )


def close_after_failure() -> None:
    """Close this thread's connections after a failed unit, whatever their age.

    A connection may be mid-protocol after an interrupted query.
    """
    for connection in unlent_connections():
        try:
            connection.close()
        except Exception:
            logger.debug("Closing %r failed", connection.alias, exc_info=True)


def persistent_connections_wanted(override: bool | None) -> bool:
    """``override`` when given, else ``DJANGO_THREAD_PERSISTENT_CONNECTIONS``."""
    if override is not None:
        return override
    from django_thread.checks import read_safely

    return bool(read_safely("DJANGO_THREAD_PERSISTENT_CONNECTIONS"))


@contextmanager
def owned_thread(persistent_connections: bool | None = None) -> Iterator[None]:
    """The whole life of a thread django_thread starts: the one place it is marked.

    Every executor worker, task worker and :class:`~django_thread.Thread`
    body runs inside this. Until the thread ends its connections are
    recorded in :data:`_connected_by_thread`, so that a forked child never
    closes them under the parent (:mod:`django_thread.forking`). When it
    ends, whatever ends it, they are closed: no later unit can reuse them,
    and without this they would stay open until the garbage collector
    breaks the wrappers' reference cycles.

    That guaranteed end is what makes persistent connections safe here and
    nowhere else: with ``persistent_connections`` on (``None``: the
    ``DJANGO_THREAD_PERSISTENT_CONNECTIONS`` setting), a connection this
    thread opens is kept across its units until the thread ends (see
    :func:`track_owned_connection`). A thread django_thread does not own
    never gets the mark, so ``unit_of_work`` there keeps nothing that
    ``CONN_MAX_AGE`` would close: there is no owner to close it later.
    """
    ident = threading.get_ident()
    _scope.persistent = persistent_connections_wanted(persistent_connections)
    _scope.connected = _connected_by_thread[ident] = {}
    try:
        yield
    finally:
        _scope.persistent = False
        _scope.connected = None
        close_thread_connections()
        _connected_by_thread.pop(ident, None)


def create_connection_wrappers() -> None:
    """Create this thread's wrapper for every alias, without connecting any.

    For pool workers, which run many units: Django's request receivers walk
    every alias through ``connections.all(initialized_only=True)`` two or
    three times per unit, and each alias without a wrapper on this thread
    costs a failed lookup in the handler's thread-local storage, dearer
    than the wrapper's own check that it is not connected. A wrapper is
    made once per alias for the worker's lifetime; an alias whose backend
    cannot load is left until a unit touches it, which fails there.
    """
    for alias in connections:
        try:
            connections[alias]
        except Exception:
            logger.debug("No connection wrapper for %r", alias, exc_info=True)


def track_owned_connection(
    sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any
) -> None:
    """``connection_created`` receiver: on an owned thread, note the wrapper.

    Noting it spares each unit's end a walk over every alias (see
    :func:`unit_connections`). On a persistent thread it also lifts the
    connection's age limit, and only that: the unit's end still closes a
    broken connection, discards a leaked transaction and honours
    ``CONN_HEALTH_CHECKS``. Django's native pool has no age to lift.
    """
    connected = _scope.connected
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
    connected = _scope.connected
    if connected is None:
        return unlent_connections()
    return list(connected.values())


def give_back_pooled_connections() -> None:
    """At a unit's end: every connection of Django's native pool goes back to it.

    Django's ``request_finished`` receiver usually does it (the pool
    requires ``CONN_MAX_AGE = 0``), but a receiver that runs after it, or
    the cleanup of a unit with signals off and errors, can leave one
    checked out; the thread would then hold a pool slot while it waits for
    its next unit, and with more threads than slots the others end in
    ``PoolTimeout``. A wrapper still inside ``atomic()`` is never this
    unit's to close (a caller's, see :func:`~django_thread.unit_of_work`).
    """
    for connection in unit_connections():
        if (
            connection.settings_dict["OPTIONS"].get("pool")
            and is_connected(connection)
            and not in_atomic_block(connection)
        ):
            run_direct_cleanup(connection.close)


def run_direct_cleanup(action: Callable[[], object]) -> None:
    """Run one of Django's cleanups; a failure is logged, never raised."""
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
    if _scope.connected is not None:
        return sharing.borrowed()
    return [c for c in initialized_connections() if shared_from_another_thread(c)]


def hide_lent_connections(
    unreadable: Collection[str] = (),
) -> list[BaseDatabaseWrapper]:
    """Take lent connections out of this thread's handler, for Django's receivers.

    ``close_old_connections`` would close a connection another thread lent
    this one: inside ``TestCase`` the test's looks "in a transaction" to it.
    (Django's test client disconnects that receiver around a request for
    the same reason.) The connections named in ``unreadable`` go too: it
    would raise on them (see :func:`uninspectable_connections`). Returns
    them, for :func:`put_back_lent_connections`.
    """
    lent = _lent_here()
    if unreadable:
        lent += [c for c in unlent_connections() if c.alias in unreadable]
    for connection in lent:
        forget_connection(connection.alias)
    return lent


def put_back_lent_connections(lent: list[BaseDatabaseWrapper]) -> None:
    """Undo :func:`hide_lent_connections`.

    A connection a receiver opened meanwhile on a lent alias is closed.
    """
    if not lent:
        return
    own = {c.alias: c for c in initialized_connections()}
    for connection in lent:
        if connection.alias in own:
            run_direct_cleanup(partial(_close, own[connection.alias]))
        lend_connection(connection.alias, connection)


def connections_of_other_threads() -> list[BaseDatabaseWrapper]:
    """In a forked child: the wrappers the parent's other owned threads held.

    Those threads do not exist in the child; their entries are dropped from
    the record, and their wrappers handed to :mod:`django_thread.forking`.
    A connection lent by another thread was never recorded, so the lender's
    own socket is never among them.
    """
    current = threading.get_ident()
    inherited = [
        wrapper
        for ident, connected in list(_connected_by_thread.items())
        if ident != current
        for wrapper in connected.values()
    ]
    for ident in [i for i in _connected_by_thread if i != current]:
        del _connected_by_thread[ident]
    return inherited
