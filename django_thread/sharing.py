"""Connections a test lends to django_thread's units, and how units take turns.

Inside ``TestCase`` (or pytest-django's ``db``) everything the test writes
stays in one transaction on the test thread's connection, rolled back at the
end. Work on another thread, with a connection of its own, cannot see those
rows, its writes are committed and outlive the test, and on SQLite's
in-memory test database it may not even see the tables. Django's live server
solves this for its own threads by lending them the test's connection
objects (``inc_thread_sharing()``, then ``connections[alias] = connection``
in the server thread). :func:`lend` does the same for every django_thread
unit of work that starts while it is in effect:

- a unit borrows the lent connections when it starts (after
  ``request_started``) and gives them back before its cleanup, so that a
  worker's own connections stay its own; the lifecycle never closes, rolls
  back or discards a connection shared from another thread (see
  ``unlent_connections`` in :mod:`django_thread.thread_connections`);
- units take turns (see :class:`_Slot`). A unit holds its turn from its
  first use of a lent connection to its end, so its queries and
  ``atomic()`` blocks never interleave with another unit's: two threads in
  savepoints on one connection would pop each other's savepoint ids. Every
  other use of a lent connection (a cursor, or a step of an ``atomic()``
  block, by the test's own thread or by a ``Thread`` body between its
  units) takes a turn for that one step, so it waits for a running unit to
  finish rather than landing inside it;
- work a unit submits takes its turn inside that unit's (the unit travels
  in the ``contextvars`` copy every unit runs in): a unit can wait for the
  result of work it submitted without a deadlock, and the unit's own next
  query waits until that work is done;
- the lent connections ignore ``close()`` from other threads: Django's own
  ``close_old_connections``, a ``request_started``/``request_finished``
  receiver, would close the test's connection because it sees a
  transaction open there (the test client disconnects that receiver around
  a request for the same reason).

The price: while a test lends its connections, units use them one at a time,
whatever the pool's size. Everything else stays real: units run on worker
threads, in a copy of the submitter's context, with signals sent and
exceptions reaching futures and ``threading.excepthook``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connections

from django_thread.internals import (
    after_cursor_close,
    forget_connection,
    initialized_connections,
    lend_connection,
    only_testcase_atomic_blocks,
    testcase_atomic_blocks,
    wrap_connection_methods,
    wrap_transaction_stacks,
)

logger = logging.getLogger("django_thread")

#: How long a thread waits for the turn before a warning names its holder.
WAIT_WARNING_AFTER = 10.0


class _Slot:
    """A place in line for the lent connections: a unit's, or one step's.

    Slots form a tree. The lender's slot is the root; a unit's slot hangs
    under the slot of the unit that submitted it, or under the root. A slot
    has at most one child at a time, so siblings take turns, and a unit's
    own steps wait while a unit it submitted is running: its work always
    nests inside its parent's, and an ``atomic()`` block never interleaves
    with another.
    """

    __slots__ = ("parent", "child", "refs", "thread")

    def __init__(self, parent: _Slot | None) -> None:
        self.parent = parent
        self.child: _Slot | None = None
        #: The holder itself, plus the child hanging under it.
        self.refs = 1
        self.thread = threading.current_thread().name


class _Turns:
    """Who may use the lent connections now: the deepest slot of the tree."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.root = _Slot(None)

    def take(self, under: _Slot | None = None, family: _Family | None = None) -> _Slot:
        """Wait until there is room under ``under``, or under ``family``'s slot.

        The family's slot is looked up again on every wake-up: the unit that
        submitted this work may take its turn, or end, meanwhile. Without
        either, or once they are done, the slot goes under the root.
        """
        with self._condition:
            waited = 0.0
            while True:
                target = under if under is not None else _slot_of(family)
                if target is None or target.refs == 0:
                    target = self.root
                if target.child is None:
                    break
                if not self._condition.wait(WAIT_WARNING_AFTER):
                    waited += WAIT_WARNING_AFTER
                    logger.warning(
                        "%s has waited %.0f s for the test's shared connections, "
                        "in use by %s. Work that waits for work it did not "
                        "submit itself (a task's result, a sibling's future) "
                        "waits forever while a test shares its connections.",
                        threading.current_thread().name,
                        waited,
                        target.child.thread,
                    )
            slot = _Slot(target)
            target.child = slot
            target.refs += 1
            return slot

    def give_back(self, slot: _Slot) -> None:
        with self._condition:
            slot.refs -= 1
            while slot.refs == 0 and slot.parent is not None:
                parent = slot.parent
                parent.child = None
                parent.refs -= 1
                slot = parent
            self._condition.notify_all()


class _Lending:
    """One test's lent connections, by alias, and the thread that lends them."""

    def __init__(self, lent: dict[str, Any]) -> None:
        self.lent = lent
        self.lender = threading.get_ident()
        self.turns = _Turns()
        #: Nested lend() calls of the same thread, undone first.
        self.depth = 0
        #: Per thread, the steps it has open (cursors, nested); the first
        #: one's slot is given back when the last ends.
        self.steps: dict[int, list[_Slot]] = {}
        self.undo = contextlib.ExitStack()


class _Family:
    """A unit, as the work it submits sees it: its slot, once it holds one."""

    __slots__ = ("parent", "slot")

    def __init__(self, parent: _Family | None) -> None:
        self.parent = parent
        self.slot: _Slot | None = None


def _slot_of(family: _Family | None) -> _Slot | None:
    """The slot of the nearest unit up the family that holds its turn."""
    while family is not None:
        if family.slot is not None:
            return family.slot
        family = family.parent
    return None


class _ThreadState(threading.local):
    #: Nesting depth of units that borrowed in this thread.
    depth = 0
    #: This thread's own wrappers of lent aliases, put back at depth 0.
    own: dict[str, Any] | None = None
    #: The lending this thread's units borrowed from, or None.
    borrowed_from: _Lending | None = None
    #: The outermost unit of this thread, and the family it was submitted from.
    family: _Family | None = None
    previous: _Family | None = None
    #: The slot this thread's unit holds, or None.
    held: _Slot | None = None


_lending: _Lending | None = None
_state = _ThreadState()
#: The unit running in this context; work it submits copies the context, and
#: takes its turn under that unit's.
_family: contextvars.ContextVar[_Family | None] = contextvars.ContextVar(
    "django_thread_sharing_family", default=None
)


def lending() -> bool:
    """True while a test lends its connections to django_thread's units."""
    return _lending is not None


# --- The lender: the test's thread ------------------------------------------


def lend() -> None:
    """Lend this thread's connections to every unit until :func:`end_lending`."""
    global _lending
    if _lending is not None:
        if _lending.lender != threading.get_ident():
            raise RuntimeError(
                "Another thread already shares its connections; a test shares "
                "its connections from its own thread."
            )
        _lending.depth += 1  # a shared test method of a shared class
        return
    lent = {connection.alias: connection for connection in connections.all()}
    new = _Lending(lent)
    for connection in lent.values():
        connection.inc_thread_sharing()
        new.undo.callback(connection.dec_thread_sharing)
        _guard_lent_connection(connection, new)
    _lending = new


def end_lending() -> None:
    """Wait for the units using the lent connections, then take them back.

    Units that start later use their own connections. A unit that borrowed
    them but uses them only now fails with Django's thread-sharing error:
    work that outlives its test is a bug in the test.
    """
    global _lending
    ending = _lending
    if ending is None:
        return
    if ending.depth:
        ending.depth -= 1
        return
    _take_step(ending)
    try:
        _lending = None
        ending.undo.close()
    finally:
        _end_step(ending)


def _guard_lent_connection(connection: Any, lent: _Lending) -> None:
    """Make the wrapper safe to use from the units' threads while it is lent.

    Every use of the connection is a step, taken in turn (see :class:`_Slot`):

    - a cursor, from its creation to its ``close()``: SQLite reads a result
      as it is fetched, and refuses a savepoint while another thread's
      statement is still being read;
    - a change of ``savepoint_ids`` or ``atomic_blocks``, the stacks
      ``transaction.Atomic`` keeps on the wrapper, so that the lender's
      ``atomic()`` waits for a running unit instead of popping its savepoint
      ids (``Atomic.__exit__`` pops before it sends any query).

    ``close()`` and ``close_if_unusable_or_obsolete()`` from other threads
    are ignored: job code running the usual ``close_old_connections()``
    recipe would close the test's connection. Everything is set on the
    instance and put back exactly as it was, through the two helpers of
    :mod:`django_thread.internals` that know the wrapper's insides.
    """
    lent.undo.callback(wrap_transaction_stacks(connection, _StepTakingList))
    lent.undo.callback(
        wrap_connection_methods(
            connection,
            cursors=_one_cursor_per_step,
            closes=_only_in_thread,
            # connect() starts the stacks afresh: wrap the new ones.
            after_connect=lambda: wrap_transaction_stacks(connection, _StepTakingList),
        )
    )


def _only_in_thread(method: Callable[[], None]) -> Callable[[], None]:
    lender = threading.get_ident()

    def in_lender_only() -> None:
        if threading.get_ident() == lender:
            method()

    return in_lender_only


def _one_cursor_per_step(make: Callable[..., Any]) -> Callable[..., Any]:
    def cursor(*args: Any, **kwargs: Any) -> Any:
        lent = _lending
        if lent is None:
            return make(*args, **kwargs)
        _take_step(lent)
        try:
            wrapper = make(*args, **kwargs)
        except BaseException:
            _end_step(lent)
            raise
        # Given back on close(), or when a cursor nobody closed is collected.
        end = weakref.finalize(wrapper, _end_step, lent, threading.get_ident())
        after_cursor_close(wrapper, end)
        return wrapper

    return cursor


class _StepTakingList(list):  # type: ignore[type-arg]
    """A lent wrapper's transaction stack: changing it is a step."""

    def append(self, item: Any) -> None:
        with _one_step():
            super().append(item)

    def pop(self, index: Any = -1) -> Any:
        with _one_step():
            return super().pop(index)


@contextlib.contextmanager
def _one_step() -> Iterator[None]:
    lent = _lending
    if lent is None:
        yield
        return
    _take_step(lent)
    try:
        yield
    finally:
        _end_step(lent)


def _take_step(lent: _Lending) -> None:
    """Take a turn for one step; a unit's first step takes its turn to its end.

    Steps nest, per thread. A unit waits for its turn only once it uses a
    lent connection, so that one that waits first (a ``Timer``, a job that
    submits work before it queries) holds nobody up meanwhile.
    """
    state = _state
    if state.held is None and state.borrowed_from is lent and state.family:
        family = state.family
        state.held = family.slot = lent.turns.take(family=family.parent)
    steps = lent.steps.setdefault(threading.get_ident(), [])
    if not steps:
        if state.held is not None:
            steps.append(lent.turns.take(under=state.held))
        else:
            steps.append(lent.turns.take(family=_family.get()))
    else:
        steps.append(steps[0])


def _end_step(lent: _Lending, ident: int | None = None) -> None:
    steps = lent.steps.get(threading.get_ident() if ident is None else ident)
    if steps:
        slot = steps.pop()
        if not steps:
            lent.turns.give_back(slot)


# --- The borrowers: units on other threads ----------------------------------


def borrow() -> None:
    """At a unit's start: use the lent connections, and take turns on them."""
    state = _state
    if state.depth:
        state.depth += 1  # a unit inside a unit: a Thread body's own units
        if state.borrowed_from is not None and state.borrowed_from is not _lending:
            _put_own_back()  # the test ended while this thread ran
        return
    lent = _lending
    if lent is None or threading.get_ident() == lent.lender:
        return
    state.depth = 1
    state.own = {
        connection.alias: connection
        for connection in initialized_connections()
        if connection.alias in lent.lent
    }
    for alias, connection in lent.lent.items():
        lend_connection(alias, connection)
    state.borrowed_from = lent
    state.previous = _family.get()
    state.family = _Family(state.previous)
    _family.set(state.family)


def borrowed() -> list[Any]:
    """The lent connections this thread's units have in use, if any."""
    state = _state
    if state.depth and state.borrowed_from is not None:
        return list(state.borrowed_from.lent.values())
    return []


def give_back() -> None:
    """At a unit's end, before its cleanup: let the next unit have its turn."""
    state = _state
    if not state.depth:
        return
    state.depth -= 1
    if state.held is not None:
        # Any unit's end, a Thread body's inner ones too: between its units
        # a long-running Thread holds nobody up.
        if state.borrowed_from is not None:
            state.borrowed_from.turns.give_back(state.held)
        state.held = None
        if state.family is not None:
            state.family.slot = None
    if not state.depth:
        _put_own_back()
        _family.set(state.previous)
        state.family = state.previous = None


def _put_own_back() -> None:
    state = _state
    lent = state.borrowed_from
    if lent is not None:
        own = state.own or {}
        for alias in lent.lent:
            if alias in own:
                lend_connection(alias, own[alias])
            else:
                forget_connection(alias)
    state.borrowed_from = None
    state.own = None


# --- What lending changes for the Tasks backend -----------------------------


def unshared_test_transaction_open(alias: str) -> bool:
    """Whether this thread is inside a ``TestCase`` that does not lend its connections.

    A task enqueued there waits for a commit that never comes.
    """
    return _lending is None and any(testcase_atomic_blocks(connections[alias]))


def only_test_transaction_open(alias: str) -> bool:
    """Whether a test lends its connections, and only ``TestCase`` is in atomic().

    While a test lends its connections, its ``TestCase`` transaction is what
    autocommit is in production: a task enqueued outside the test's own
    ``atomic()`` blocks should run now, not wait for a commit that never
    comes.
    """
    return _lending is not None and only_testcase_atomic_blocks(connections[alias])
