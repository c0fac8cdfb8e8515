"""Task results: ids, the JSON round trip, copies, and the in-memory store."""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from django_thread.internals import copy_task_result
from django_thread.tasks.compat import (
    TaskResult,
    TaskResultDoesNotExist,
    normalize_json,
)


def new_id() -> str:
    """A random 32-character id, like the ids of Django's own backends.

    Not ``get_random_string(32)``, which they use: it reads the system's
    random source once per character, and costs more than running a
    trivial task. ``token_hex(16)`` is one read of the same source, and a
    quarter of the cost of building a ``uuid4``.
    """
    return secrets.token_hex(16)


#: Types whose values come out of a JSON round trip equal and of the same
#: type (floats too, when finite: see :func:`_is_json_scalar`).
_JSON_SCALARS = frozenset({str, int, bool, float, type(None)})


def _is_json_scalar(value: Any) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged.

    Exact types only: a ``str`` or ``int`` subclass (``SafeString``, an
    ``IntEnum``) comes back as its base type. NaN and infinities are
    refused by the round trip, so they do not qualify.
    """
    kind = type(value)
    return kind in _JSON_SCALARS and (kind is not float or math.isfinite(value))


def are_json_scalars(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """Whether every argument is a scalar the JSON round trip leaves alone.

    For those, the round trip could not change a thing, so the backend
    skips it: the worker calls the task with the same immutable values
    (in a new tuple and dict), which is all a remote worker would get.
    """
    for value in args:
        if not _is_json_scalar(value):
            return False
    for name, value in kwargs.items():
        if type(name) is not str or not _is_json_scalar(value):
            return False
    return True


def through_json(value: Any) -> Any:
    """What a value looks like after a trip through a distributed queue.

    ``normalize_json`` is the framework's own step (and raises its
    ``TypeError``/``ValueError`` for what it refuses); the JSON round trip
    adds what a JSON column or message body does on top of it: dict keys
    become strings, and NaN and infinities are refused as PostgreSQL's
    ``jsonb`` refuses them. A scalar that the trip leaves unchanged (most
    return values) is returned as is, without the trip.
    """
    if _is_json_scalar(value):
        return value
    return json.loads(json.dumps(normalize_json(value), allow_nan=False))


def copy_result(result: TaskResult[Any, Any], **changes: Any) -> TaskResult[Any, Any]:
    """A new result with ``result``'s fields and ``changes``.

    Each state of a task is a new ``TaskResult`` built this way: a
    published one is never written again, so it can be stored and sent to
    receivers as it is (see :class:`ResultStore`).
    """
    return copy_task_result(result, **changes)  # type: ignore[no-any-return]


def update_result(result: TaskResult[Any, Any], **changes: Any) -> None:
    """Write to a frozen ``TaskResult``, as the framework's own backends do.

    Only for a result nobody else has seen yet: once published, a result
    is never written again.
    """
    for name, value in changes.items():
        object.__setattr__(result, name, value)


class ResultStore:
    """Published results, by id; finished ones bounded in count and age.

    Results that are waiting or running are never evicted: a caller polling
    one must not lose it. Finished ones are kept in finishing order and
    dropped oldest first once there are more than ``max_results`` of them,
    or once they are older than ``ttl`` seconds.

    A published result is never written again (each state of a task is a
    new object, see :func:`copy_result`), so :meth:`publish` stores it as
    it is. :meth:`get` hands out a copy with lists of its own, because the
    caller's result is written to by ``refresh()``, and its lists are the
    caller's to change.
    """

    def __init__(self, max_results: int, ttl: float) -> None:
        self.max_results = max_results
        self.ttl = ttl
        self._lock = threading.Lock()
        self._unfinished: dict[str, TaskResult[Any, Any]] = {}
        self._finished: OrderedDict[str, tuple[TaskResult[Any, Any], float]] = (
            OrderedDict()
        )

    def publish(self, result: TaskResult[Any, Any]) -> None:
        """Make ``result`` what ``get`` returns; never write to it afterwards.

        An unfinished state is one atomic dict write, so it takes no lock:
        the states of one task are published one after the other (enqueue,
        then its worker), and the lock is only needed where a result moves
        between the two dicts and old ones are evicted.
        """
        if not result.is_finished:
            self._unfinished[result.id] = result
            return
        with self._lock:
            self._unfinished.pop(result.id, None)
            now = time.monotonic()
            self._finished[result.id] = (result, now)
            self._finished.move_to_end(result.id)
            self._evict(now)

    def unfinished(self) -> list[TaskResult[Any, Any]]:
        """The results still waiting or running, for the exit report."""
        with self._lock:
            return list(self._unfinished.values())

    def discard(self, result_id: str) -> None:
        with self._lock:
            self._unfinished.pop(result_id, None)
            self._finished.pop(result_id, None)

    def get(self, result_id: str) -> TaskResult[Any, Any]:
        # An unfinished result is never evicted: one atomic read finds it
        # without the lock, which workers publishing final states take.
        snapshot = self._unfinished.get(result_id)
        if snapshot is None:
            with self._lock:
                self._evict(time.monotonic())
                snapshot = self._unfinished.get(result_id)
                if snapshot is None:
                    finished = self._finished.get(result_id)
                    if finished is None:
                        raise TaskResultDoesNotExist(result_id)
                    snapshot = finished[0]
        return copy_result(
            snapshot, errors=list(snapshot.errors), worker_ids=list(snapshot.worker_ids)
        )

    def _evict(self, now: float) -> None:
        while len(self._finished) > self.max_results:
            self._finished.popitem(last=False)
        expired_before = now - self.ttl
        while self._finished:
            _, finished_at = next(iter(self._finished.values()))
            if finished_at > expired_before:
                break
            self._finished.popitem(last=False)
