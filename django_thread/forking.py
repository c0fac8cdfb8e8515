"""A forked child never touches the connections of its parent's threads.

``fork()`` copies every open socket of the parent into the child, but only
the forking thread. The connections that django_thread's other threads held
(a worker with ``CONN_MAX_AGE`` above zero keeps one per database) now have
two owners, and the parent is still using them. If the child closed one, or
merely let it be garbage collected, the driver would say goodbye to the
server on the shared socket (libpq's ``PQfinish`` sends a Terminate message,
MySQL's ``mysql_close`` a ``COM_QUIT``), and the server would end the
*parent's* session. That is exactly what happens by default: the child
clears the thread-local storage of the threads it did not inherit, and with
it the last references to their connection wrappers.

So every thread django_thread starts holds a strong reference to each
connection it opens (:func:`track_this_thread`, dropped again when the
thread ends and has closed them), and in the child
:func:`forget_inherited_connections` makes each of them harmless before it
is let go: the socket's descriptor number is pointed at ``/dev/null`` with
``os.dup2``, so whatever the driver says on closing goes nowhere, and then
the driver connection is closed, releasing the child's copy of the
descriptor and nothing else. A driver without a socket (SQLite) keeps its
connection referenced for the life of the child, never closed: closing a
SQLite connection another process may be using mid-transaction is what
SQLite's documentation forbids across ``fork()``.

The connections of the forking thread itself are left alone, as Django
leaves them: close them before forking (see README.rst, "Processes").
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.db.backends.signals import connection_created

from django_thread import internals

logger = logging.getLogger("django_thread")

#: Per thread (by ident), the connection wrappers it opened: kept alive here
#: so that the child, not the garbage collector, decides what happens to them.
_held: dict[int, set[Any]] = {}
#: In a forked child: inherited connections that have no socket to detach.
_kept_forever: list[Any] = []


def track_this_thread() -> None:
    """Hold every connection this thread opens until :func:`untrack_this_thread`."""
    _held[threading.get_ident()] = set()


def untrack_this_thread() -> None:
    """The thread is ending and has closed its connections: let them go."""
    _held.pop(threading.get_ident(), None)


def _hold(sender: Any, connection: Any, **kwargs: Any) -> None:
    held = _held.get(threading.get_ident())
    if held is not None:
        # A thread has one wrapper per alias: an earlier one for this alias
        # was discarded (and closed) by the lifecycle, and needs no holding.
        for replaced in [w for w in held if w.alias == connection.alias]:
            held.discard(replaced)
        held.add(connection)


def install() -> None:
    """Start holding connections; called with the registry's fork hooks."""
    connection_created.connect(_hold, dispatch_uid="django_thread.forking.hold")


def _detach(raw: Any) -> bool:
    """Close ``raw`` so that nothing reaches its server; False if it cannot."""
    fileno = getattr(raw, "fileno", None)
    if fileno is None:
        return False
    try:
        fd = fileno()
    except Exception:
        return True  # already closed: nothing can reach the server
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
    try:
        raw.close()  # says goodbye to /dev/null, closes the child's descriptor
    except Exception:
        logger.debug("Closing an inherited connection failed", exc_info=True)
    return True


def forget_inherited_connections() -> None:
    """In a forked child: make the other threads' connections harmless."""
    current = threading.get_ident()
    inherited = [
        wrapper
        for ident, wrappers in _held.items()
        if ident != current
        for wrapper in wrappers
    ]
    mine = _held.get(current)  # forked from a django_thread thread: still its
    _held.clear()
    if mine is not None:
        _held[current] = mine
    for wrapper in inherited:
        raw = internals.driver_connection(wrapper)
        if raw is not None and not _detach(raw):
            _kept_forever.append(raw)
