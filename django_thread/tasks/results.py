"""Task results: ids, the JSON round trip, copies, and the in-memory store."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from django_thread.tasks.compat import (
    TaskResult,
    TaskResultDoesNotExist,
    normalize_json,
)


def new_id() -> str:
    """A random 32-character id, like the ids of Django's own backends.

    Not ``get_random_string(32)``, which they use: it reads the system's
    random source once per character, and cost more than running a
    trivial task. One ``uuid4`` is a single read of the same source.
    """
    return uuid.uuid4().hex


def through_json(value: Any) -> Any:
    """What a value looks like after a trip through a distributed queue.

    ``normalize_json`` is the framework's own step (and raises its
    ``TypeError``/``ValueError`` for what it refuses); the JSON round trip
    adds what a JSON column or message body does on top of it: dict keys
    become strings, and NaN and infinities are refused as PostgreSQL's
    ``jsonb`` refuses them.
    """
    return json.loads(json.dumps(normalize_json(value), allow_nan=False))


#: Every field of a result, ``init=False`` ones included.
_RESULT_FIELDS = tuple(field.name for field in dataclasses.fields(TaskResult))


def _copy_result(result: TaskResult[Any, Any]) -> TaskResult[Any, Any]:
    """An independent copy, so that no caller sees a worker's later writes.

    Field by field: ``dataclasses.replace`` would drop the framework's
    private ``_return_value`` (``init=False``) and re-run ``__post_init__``,
    and ``copy.copy`` goes through pickling's protocol; both cost more than
    running a trivial task. The two lists are the only fields a worker
    mutates in place, so they are copied too. ``dataclasses.fields`` lists
    the private field as well, so the copy needs no private name (the one
    write to it is :func:`django_thread.internals.set_task_return_value`).
    """
    duplicate = object.__new__(type(result))
    for name in _RESULT_FIELDS:
        object.__setattr__(duplicate, name, getattr(result, name))
    _update(duplicate, errors=list(result.errors), worker_ids=list(result.worker_ids))
    return duplicate


def _update(result: TaskResult[Any, Any], **changes: Any) -> None:
    """Write to a frozen ``TaskResult``, as the framework's own backends do.

    Only the worker that owns the result writes, and only before it is
    published again, so readers never see a half-written result.
    """
    for name, value in changes.items():
        object.__setattr__(result, name, value)


class ResultStore:
    """Published results, by id; finished ones bounded in count and age.

    Results that are waiting or running are never evicted: a caller polling
    one must not lose it. Finished ones are kept in finishing order and
    dropped oldest first once there are more than ``max_results`` of them,
    or once they are older than ``ttl`` seconds.
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
        snapshot = _copy_result(result)
        with self._lock:
            if snapshot.is_finished:
                self._unfinished.pop(snapshot.id, None)
                self._finished[snapshot.id] = (snapshot, time.monotonic())
                self._finished.move_to_end(snapshot.id)
                self._evict()
            else:
                self._unfinished[snapshot.id] = snapshot

    def discard(self, result_id: str) -> None:
        with self._lock:
            self._unfinished.pop(result_id, None)
            self._finished.pop(result_id, None)

    def get(self, result_id: str) -> TaskResult[Any, Any]:
        with self._lock:
            self._evict()
            snapshot = self._unfinished.get(result_id)
            if snapshot is None:
                finished = self._finished.get(result_id)
                if finished is None:
                    raise TaskResultDoesNotExist(result_id)
                snapshot = finished[0]
        return _copy_result(snapshot)

    def _evict(self) -> None:
        while len(self._finished) > self.max_results:
            self._finished.popitem(last=False)
        expired_before = time.monotonic() - self.ttl
        while self._finished:
            _, finished_at = next(iter(self._finished.values()))
            if finished_at > expired_before:
                break
            self._finished.popitem(last=False)
