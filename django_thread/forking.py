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

So every thread django_thread starts records each connection it opens, in
the one record of its connections that its units use too
(:mod:`django_thread.thread_connections`), and keeps it there until it has
closed it; in the child :func:`forget_inherited_connections` makes each of
the other threads' connections harmless before it is let go: the socket's
descriptor number is pointed at ``/dev/null`` with ``os.dup2``, so whatever
the driver says on closing goes nowhere, and then the driver connection is
closed, releasing the child's copy of the descriptor and nothing else. A
driver without a socket (SQLite) keeps its connection referenced for the
life of the child, never closed: closing a SQLite connection another
process may be using mid-transaction is what SQLite's documentation forbids
across ``fork()``. A connection a test lent to a worker is never in the
record: it is the lender's, and the lender may be the forking thread.

The connections of the forking thread itself are left alone, as Django
leaves them: close them before forking (see README.rst, "Processes").
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django_thread import internals, thread_connections

logger = logging.getLogger("django_thread")

#: In a forked child: inherited connections that have no socket to detach.
_kept_forever: list[Any] = []


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
    for wrapper in thread_connections.connections_of_other_threads():
        raw = internals.driver_connection(wrapper)
        if raw is not None and not _detach(raw):
            _kept_forever.append(raw)
