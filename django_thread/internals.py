"""Every Django and CPython internal that django_thread relies on, one helper each.

Where a public API serves, the package uses it. Where none does, the
private name is used in exactly one function below, never elsewhere, with a
comment naming the versions it was checked on. ``tests/test_internals.py``
runs each helper on every supported Python and Django, so that a change in
either fails there, by name, instead of deep inside a worker. The executor's
attributes named after ``concurrent.futures.ThreadPoolExecutor``'s private
ones are its own state, not the stdlib's: they are set only in its
``__init__`` and ``_new_generation``, a fence that ``tests/test_registry.py``
checks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import sys
import threading
import types
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent import futures
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.dispatch import Signal

if TYPE_CHECKING:
    from django_thread.tasks.compat import TaskResult


def initialized_connections() -> Sequence[BaseDatabaseWrapper]:
    """This thread's connection wrappers, without creating any new one."""
    # ConnectionHandler.all(initialized_only=True) is undocumented; Django's
    # own close_old_connections() uses it. Checked on Django 5.2, 6.0, 6.1.
    return connections.all(initialized_only=True)


def is_connected(connection: BaseDatabaseWrapper) -> bool:
    """Whether the wrapper holds an open DB-API connection, without opening one."""
    # BaseDatabaseWrapper.connection is None while closed; every public way
    # to ask (get_autocommit(), is_usable(), a cursor) connects first.
    # Checked on Django 5.2, 6.0, 6.1.
    return connection.connection is not None


def in_atomic_block(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``transaction.atomic()`` is open on this thread's wrapper."""
    # BaseDatabaseWrapper.in_atomic_block is undocumented (so is
    # transaction.get_connection(), "a private API"); it is what atomic()
    # itself reads, and reading it never connects. Checked on Django 5.2,
    # 6.0, 6.1.
    return bool(connection.in_atomic_block)


def driver_connection(connection: BaseDatabaseWrapper) -> Any:
    """The wrapper's DB-API connection, or None while it is closed."""
    # BaseDatabaseWrapper.connection, see is_connected(). Checked on Django
    # 5.2, 6.0, 6.1.
    return connection.connection


def rollback_driver_connection(connection: BaseDatabaseWrapper) -> None:
    """Roll back on the DB-API connection, past the wrapper's atomic() guard.

    ``BaseDatabaseWrapper.rollback()`` refuses to run inside an atomic
    block, which is exactly the state of a leaked one.
    """
    # BaseDatabaseWrapper.connection, see is_connected(). Checked on Django
    # 5.2, 6.0, 6.1 with sqlite3, psycopg 3 and mysqlclient.
    raw = connection.connection
    if raw is not None:
        raw.rollback()


def forget_connection(alias: str) -> None:
    """Drop this thread's wrapper for ``alias``; the next access builds a new one."""
    # ConnectionHandler.__delitem__ deletes the wrapper from the handler's
    # thread-local storage; undocumented. Checked on Django 5.2, 6.0, 6.1.
    del connections[alias]


def keep_open_until_thread_ends(connection: BaseDatabaseWrapper) -> None:
    """Lift ``CONN_MAX_AGE`` from a connection that was just opened."""
    # BaseDatabaseWrapper.close_at (a time.monotonic() deadline, or None for
    # no limit) is what close_if_unusable_or_obsolete() compares; connect()
    # sets it from CONN_MAX_AGE *before* sending connection_created, so a
    # receiver may override it. Checked on Django 5.2, 6.0, 6.1.
    connection.close_at = None


def close_in_memory_database_handle(connection: BaseDatabaseWrapper) -> None:
    """Close an ending thread's own handle on SQLite's in-memory database.

    SQLite's ``DatabaseWrapper.close()`` ignores in-memory databases, since
    closing the last handle destroys the database; an ending thread's handle
    would then be closed by the garbage collector, with a ``ResourceWarning``.
    The database lives on in other threads' handles (Django's test database
    is a shared-cache one; a plain ``:memory:`` one is private to its handle).
    """
    # BaseDatabaseWrapper.close, past the sqlite3 backend's override of it.
    # Checked on Django 5.2, 6.0, 6.1.
    BaseDatabaseWrapper.close(connection)


def shared_from_another_thread(connection: BaseDatabaseWrapper) -> bool:
    """Whether another thread created this wrapper and lent it to this one."""
    # BaseDatabaseWrapper._thread_ident is the creating thread, set in
    # __init__ and read by validate_thread_sharing(); allow_thread_sharing is
    # public. Checked on Django 5.2, 6.0, 6.1.
    return (
        connection._thread_ident != threading.get_ident()  # type: ignore[attr-defined]
        and connection.allow_thread_sharing
    )


def lend_connection(alias: str, connection: BaseDatabaseWrapper) -> None:
    """Make another thread's wrapper this thread's connection for ``alias``."""
    # ConnectionHandler.__setitem__, as LiveServerThread uses it; the wrapper
    # must allow thread sharing (inc_thread_sharing()). Undocumented.
    # Checked on Django 5.2, 6.0, 6.1.
    connections[alias] = connection


def wrap_transaction_stacks(
    connection: BaseDatabaseWrapper, wrap: Callable[[list[Any]], list[Any]]
) -> Callable[[], None]:
    """Replace the wrapper's atomic() stacks by ``wrap(stack)``; return the undo.

    ``savepoint_ids`` and ``atomic_blocks`` are the lists
    ``transaction.Atomic`` pushes on entry and pops on exit.
    """
    # Checked on Django 5.2, 6.0, 6.1: Atomic only appends, pops, indexes
    # and truth-tests them; connect() rebinds them to new lists.
    for name in ("savepoint_ids", "atomic_blocks"):
        setattr(connection, name, wrap(getattr(connection, name)))

    def undo() -> None:
        for name in ("savepoint_ids", "atomic_blocks"):
            setattr(connection, name, list(getattr(connection, name)))

    return undo


def wrap_connection_methods(
    connection: BaseDatabaseWrapper,
    *,
    cursors: Callable[[Callable[..., Any]], Callable[..., Any]],
    closes: Callable[[Callable[[], None]], Callable[[], None]],
    after_connect: Callable[[], object],
) -> Callable[[], None]:
    """Wrap, on this wrapper only, how it makes cursors, closes and connects.

    ``cursors`` wraps each method that makes a cursor, ``closes`` each that
    closes the connection; ``after_connect`` runs after each ``connect()``.
    Returns the undo, which puts back exactly what the instance had.
    """
    # Checked on Django 5.2, 6.0, 6.1: every cursor comes from cursor() or
    # chunked_cursor() (QuerySet.iterator()); Django and the usual
    # close_old_connections() recipe close through close() and
    # close_if_unusable_or_obsolete(); connect() rebinds savepoint_ids and
    # atomic_blocks to new lists (see wrap_transaction_stacks()). Each is
    # looked up on the instance, so one set there shadows the class's, as
    # TestCase sets its guards against disallowed databases.
    missing = object()
    saved: list[tuple[str, Any]] = []

    def replace(name: str, replacement: Callable[..., Any]) -> None:
        saved.append((name, vars(connection).get(name, missing)))
        setattr(connection, name, replacement)

    for name in ("cursor", "chunked_cursor"):
        replace(name, cursors(getattr(connection, name)))
    for name in ("close", "close_if_unusable_or_obsolete"):
        replace(name, closes(getattr(connection, name)))
    connect = connection.connect

    def connect_and_after() -> None:
        connect()
        after_connect()

    replace("connect", connect_and_after)

    def undo() -> None:
        for name, before in reversed(saved):
            if before is missing:
                vars(connection).pop(name, None)
            else:
                setattr(connection, name, before)

    return undo


def after_cursor_close(cursor: Any, callback: Callable[[], object]) -> None:
    """Run ``callback`` after this cursor wrapper's ``close()``, even if it raised."""
    # Checked on Django 5.2, 6.0, 6.1: CursorWrapper.__exit__ closes through
    # self.close(), which finds this instance attribute before the class's
    # __getattr__ passes close() through to the driver's cursor.
    close = cursor.close  # the driver's close, bound to its cursor

    def close_then_callback() -> None:
        try:
            close()
        finally:
            callback()

    cursor.close = close_then_callback


def testcase_atomic_blocks(connection: BaseDatabaseWrapper) -> list[bool]:
    """For each open atomic() block, whether ``TestCase`` opened it itself."""
    # TestCase._enter_atomics sets Atomic._from_testcase; Django's own check
    # for durable blocks reads it from connection.atomic_blocks the same way.
    # Checked on Django 5.2, 6.0, 6.1 (pytest-django's db uses TestCase).
    return [
        getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
    ]


def only_testcase_atomic_blocks(connection: BaseDatabaseWrapper) -> bool:
    """Whether every open atomic() block is one ``TestCase`` opened itself."""
    return all(testcase_atomic_blocks(connection))


def set_task_return_value(result: TaskResult[Any, Any], value: Any) -> None:
    """Store a task's return value on its frozen ``TaskResult``."""
    # TaskResult._return_value is a private field (init=False) of a frozen
    # dataclass, read by the public return_value property; Django's own
    # ImmediateBackend writes it the same way. Checked on Django 6.0, 6.1 and
    # on Django 5.2 with django-tasks 0.12.
    object.__setattr__(result, "_return_value", value)


def run_before_threads_join(hook: Callable[[], object]) -> None:
    """Run ``hook`` at interpreter exit, before ``threading`` joins non-daemon threads.

    ``atexit`` handlers run only after that join: too late to ask a
    non-daemon thread to stop, since the join waits for it forever.
    """
    # threading._register_atexit is private; concurrent.futures.thread uses it
    # for its own pool's exit. Checked on CPython 3.10, 3.11, 3.12, 3.13.
    threading._register_atexit(hook)  # type: ignore[attr-defined]


def locks_a_unit_takes() -> list[Any]:
    """The locks in Django that a unit of work takes, for a fork to hold.

    A worker holds each of them briefly in every unit: the signals it sends
    (request_started and request_finished, connection_created, the task
    signals) and the non-thread-critical ``asgiref.local.Local`` objects
    their receivers and the unit's context use (the cache handler's, the
    active language and time zone, the task backends'). A child forked
    while another thread held one would hang in its first unit; so the
    fork hooks take them all before the fork and release them on both
    sides after it (see :mod:`django_thread.forking`).
    """
    # Signal.lock (django/dispatch/dispatcher.py) and the private
    # asgiref.local._DefaultLocal._lock (an RLock; thread-critical Locals
    # have none), which asgiref 3.12 and older (the newest on Python 3.10)
    # call Local._thread_lock. Read now, not at import: Django's test
    # signals replace the Locals when settings change. Checked on Django
    # 5.2, 6.1 with asgiref 3.12.1 and 3.13, and on the django-tasks 0.12
    # backport.
    from django.core.cache import caches
    from django.core.signals import request_finished, request_started
    from django.db.backends.signals import connection_created
    from django.utils import timezone

    signals = [request_started, request_finished, connection_created]
    locals_ = [vars(caches)["_connections"], vars(timezone)["_active"]]
    for name in ("django.tasks.signals", "django_tasks.signals"):
        module = sys.modules.get(name)
        if module is not None:
            signals += [module.task_enqueued, module.task_started, module.task_finished]
    for name in ("django.tasks", "django_tasks"):
        handler = getattr(sys.modules.get(name), "task_backends", None)
        if handler is not None:
            locals_.append(handler._connections)
    trans_real = sys.modules.get("django.utils.translation.trans_real")
    if trans_real is not None:
        locals_.append(trans_real._active)
    local_locks = [
        vars(local).get("_lock", vars(local).get("_thread_lock")) for local in locals_
    ]
    return [signal.lock for signal in signals] + [
        lock for lock in local_locks if lock is not None
    ]


@functools.cache
def _field_slots(
    cls: Any,
) -> (
    tuple[
        Callable[[Any], tuple[Any, ...]],
        tuple[Callable[[Any, Any], None], ...],
        dict[str, Callable[[Any, Any], None]],
    ]
    | None
):
    """A getter of every field of ``cls`` at once, and each field's slot setter.

    The setters are the slot descriptors' bound ``__set__``, in field order
    and by name. None when the fields are not slots (the ``django-tasks``
    backport on Python 3.10 declares ``slots=True`` only from 3.11).
    """
    names = [field.name for field in dataclasses.fields(cls)]
    slots = [cls.__dict__.get(name) for name in names]
    if not all(isinstance(slot, types.MemberDescriptorType) for slot in slots):
        return None
    setters = tuple(slot.__set__ for slot in slots)
    return operator.attrgetter(*names), setters, dict(zip(names, setters, strict=True))


def copy_task_result(result: Any, **changes: Any) -> Any:
    """A new ``TaskResult`` with ``result``'s fields, ``changes`` written over them.

    Without ``__init__``: ``dataclasses.replace`` re-runs ``__post_init__``
    (which normalizes the arguments again) and drops ``_return_value``
    (``init=False``, see :func:`set_task_return_value`); ``copy.copy`` goes
    through pickling's protocol: each costs two to three times as much, and
    a task takes four copies. Lists are shared, not copied: callers that
    hand a copy out copy them.

    Measured (issue 15) with this and :func:`new_task_result` replaced by
    ``dataclasses.replace`` and the constructor: 2000 trivial tasks on 4
    workers, ``python -m benchmarks --only tasks``, five runs of each side
    alternating, twice: the backend/executor time went from 2.69 and 2.57
    (medians) to 3.10 and 3.04, 15-18% slower (-17% and -25% in tasks per
    second), so both stay.
    """
    # TaskResult is a frozen dataclass with slots=True (Django 6.0, 6.1, and
    # django-tasks 0.12 on Python >= 3.11): each field is a slot, written
    # here through its member descriptor's bound __set__ as
    # object.__setattr__ would, at a third of the cost; without slots
    # (django-tasks on Python 3.10) the fields live in __dict__. Checked on
    # Python 3.10-3.13 with Django 5.2 and django-tasks 0.12, and on Django
    # 6.0 and 6.1.
    cls: Any = type(result)
    duplicate = object.__new__(cls)
    slots = _field_slots(cls)
    if slots is None:
        duplicate.__dict__.update(result.__dict__)
        for name, value in changes.items():
            object.__setattr__(duplicate, name, value)
        return duplicate
    get_all, setters, by_name = slots
    for setter, value in zip(setters, get_all(result), strict=False):
        setter(duplicate, value)
    for name, value in changes.items():
        named_setter = by_name.get(name)
        if named_setter is None:
            object.__setattr__(duplicate, name, value)  # raises AttributeError
        else:
            named_setter(duplicate, value)
    return duplicate


@functools.cache
def _field_defaults(cls: Any) -> tuple[tuple[str, Any], ...]:
    """Each field of the dataclass ``cls`` with its default (MISSING if none)."""
    return tuple((field.name, field.default) for field in dataclasses.fields(cls))


def new_task_result(cls: Any, **values: Any) -> Any:
    """A ``TaskResult`` of these field values, built without ``__post_init__``.

    For arguments that are already what ``normalize_json`` makes of them (a
    list and a dict of JSON scalars): its ``__post_init__`` does nothing
    but run ``normalize_json`` on ``args`` and ``kwargs``, and that match
    over abstract base classes costs 4-5 us for one argument and no
    keyword: a quarter of what an enqueue cost. What both bypasses save is
    measured in :func:`copy_task_result`.
    """
    # TaskResult.__post_init__ only normalizes args and kwargs, and its one
    # field with a default is _return_value (None, init=False). Fields are
    # written as the dataclass's own __init__ writes a frozen one. Checked
    # on Django 6.0 and 6.1, and on Django 5.2 with django-tasks 0.12.
    result = object.__new__(cls)
    for name, default in _field_defaults(cls):
        value = values.pop(name, default)
        if value is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__} needs a value for {name!r}")
        object.__setattr__(result, name, value)
    if values:
        raise TypeError(f"{cls.__name__} has no field {', '.join(values)}")
    return result


#: asgiref 3.13 added ThreadSensitiveContext(executor=...); the newest asgiref
#: on Python 3.10 is 3.12.
_CONTEXT_TAKES_EXECUTOR = (
    "executor" in inspect.signature(ThreadSensitiveContext).parameters
)


@asynccontextmanager
async def thread_sensitive_context(executor: futures.Executor) -> AsyncIterator[None]:
    """asgiref's ``ThreadSensitiveContext``, whose sync calls ``executor`` runs.

    asgiref 3.13 takes the executor, publicly. Before it, asgiref finds a
    context's executor in ``SyncToAsync.context_to_thread_executor`` (a
    class attribute, read by ``SyncToAsync.__call__`` and popped and shut
    down by the context's ``__aexit__``): the entry is put there as the
    context starts and taken out again before it ends, so that asgiref
    neither creates a thread of its own nor shuts ``executor`` down. Checked
    on asgiref 3.12.1 (Python 3.10) and 3.13.0.
    """
    if _CONTEXT_TAKES_EXECUTOR:
        async with ThreadSensitiveContext(executor=executor):  # type: ignore[call-arg, no-untyped-call, unused-ignore]
            yield
        return
    context = ThreadSensitiveContext()  # type: ignore[no-untyped-call, unused-ignore]
    async with context:
        if context.token is None:  # inside another context: that one serves
            yield
            return
        executors = SyncToAsync.context_to_thread_executor
        executors[context] = executor  # type: ignore[index, assignment, unused-ignore]
        try:
            yield
        finally:
            executors.pop(context, None)  # type: ignore[call-overload, unused-ignore]


#: Per (signal, sender): the ``Signal.receivers`` entries it was computed
#: from, the sender, and what those entries say about the sender's receivers.
_receivers_cache: dict[
    tuple[int, int], tuple[tuple[Any, ...], Any, tuple[tuple[Any, bool, Any], ...]]
] = {}
#: Beyond this many (signal, sender) pairs the cache starts over.
_RECEIVERS_CACHE_SIZE = 64
_CACHEABLE_SENDERS = (type, types.FunctionType)


def live_receivers(signal: Any, sender: Any) -> list[Callable[..., Any]] | None:
    """The receivers ``signal.send_robust(sender)`` would call, read without its lock.

    None when Django must do it: the signal is a subclass, a receiver is
    async or has died (Django removes those under its lock), or the sender
    is neither None, a class nor a function. Django's ``_live_receivers``
    takes the signal's lock on every send of a signal without caching
    (every signal of the request and task lifecycles); with several
    workers on few cores, that lock, taken five times per task, is where
    worker threads queue for the interpreter. The receivers list only
    changes under that lock, and a tuple copy of it is atomic, so a copy
    equal to the one the answer was computed from means it still holds.
    """
    # Signal.receivers holds (lookup_key, receiver or weakref to it,
    # [weakref to sender (Django >= 6.0),] is_async) tuples, lookup_key
    # being (receiver id or dispatch_uid, id(sender) or id(None)); connect()
    # and disconnect() change it under Signal.lock, and _flag_dead_receivers
    # sets _dead_receivers when a weakly held receiver or sender dies.
    # Checked on Django 5.2 (3-tuples), 6.0 and 6.1 (4-tuples).
    if type(signal) is not Signal or signal._dead_receivers:  # type: ignore[attr-defined]
        return None
    if sender is not None and not isinstance(sender, _CACHEABLE_SENDERS):
        return None
    snapshot = tuple(signal.receivers)
    key = (id(signal), id(sender))
    cached = _receivers_cache.get(key)
    if cached is None or cached[1] is not sender or cached[0] != snapshot:
        matching = (id(None), id(sender))
        entries = []
        for entry in snapshot:
            if entry[-1]:  # an async receiver: Django runs those
                return None
            if entry[0][1] in matching:
                sender_ref = entry[2] if len(entry) == 4 else None
                weak = isinstance(entry[1], weakref.ReferenceType)
                entries.append((entry[1], weak, sender_ref))
        if len(_receivers_cache) >= _RECEIVERS_CACHE_SIZE:
            _receivers_cache.clear()
        cached = _receivers_cache[key] = (snapshot, sender, tuple(entries))
    receivers = []
    for receiver, weak, sender_ref in cached[2]:
        if weak:
            receiver = receiver()
            if receiver is None:
                return None
        if sender_ref is not None and sender_ref() is None:
            return None
        receivers.append(receiver)
    return receivers
