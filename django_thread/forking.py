"""A forked child never touches the connections or locks of its parent's threads.

(The rule for all code that runs in a forked child is in
:mod:`django_thread.registry`, which runs the fork hooks.)

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

So every thread django_thread starts records each connection it opens, in
the one record of its connections that its units use too
(:mod:`django_thread.thread_connections`), and keeps it there until it has
closed it; in the child :func:`forget_inherited_connections` makes each of
the other threads' connections harmless: the socket's descriptor number is
pointed at ``/dev/null`` with ``os.dup2``, which releases the child's copy
of the socket, and the driver connection is then kept referenced for the
life of the child, never closed. Closing it would call into the driver, and
a driver may lock there what a parent thread held at the fork (psycopg2
takes its connection's mutex, which a query in progress holds; a psycopg
pool's connection returns to its pool, under the pool's lock). The same
goes for a driver without a socket (SQLite), where closing a connection
another process may be using mid-transaction is also what SQLite's
documentation forbids across ``fork()``. A connection a test lent to a
worker is never in the record: it is the lender's, and the lender may be
the forking thread.

The same holds for Django's locks that every unit of work takes (a
signal's receiver list, the active language's storage: see
:func:`~django_thread.internals.locks_a_unit_takes`): a worker may hold one
at the fork, and the child's first unit would wait for it forever. They
cannot be replaced, being Django's, so :func:`hold_units_locks` takes them
before the fork, as ``logging`` does its own, and :func:`release_units_locks`
releases them on both sides after it: the forking thread holds them, so the
child waits for no one.

The connections of the forking thread itself are left alone, as Django
leaves them: close them before forking (see README.rst, "Processes").
"""

from __future__ import annotations

import os
from typing import Any

from django_thread import internals, thread_connections

#: In a forked child: inherited driver connections, never closed (see above).
_kept_forever: list[Any] = []
#: Django's locks that the forking thread holds across a fork.
_units_locks: list[Any] = []


def _detach(raw: Any) -> None:
    """Point ``raw``'s socket at ``/dev/null``: nothing it says reaches its server."""
    fileno = getattr(raw, "fileno", None)
    if fileno is None:
        return
    try:
        fd = fileno()
    except Exception:
        return  # already closed: nothing can reach the server
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def forget_inherited_connections() -> None:
    """In a forked child: make the other threads' connections harmless.

    Runs in the child's at-fork hook, so it calls no driver method that
    could lock (only ``fileno()``) and logs nothing.
    """
    for wrapper in thread_connections.connections_of_other_threads():
        raw = internals.driver_connection(wrapper)
        if raw is not None:
            _detach(raw)
            _kept_forever.append(raw)


def hold_units_locks() -> None:
    """Before a fork: take Django's locks that units take, so no worker holds one."""
    locks = internals.locks_a_unit_takes()
    for lock in locks:
        lock.acquire()
    _units_locks[:] = locks


def release_units_locks() -> None:
    """After a fork, in parent and child: release what :func:`hold_units_locks` took."""
    while _units_locks:
        _units_locks.pop().release()
