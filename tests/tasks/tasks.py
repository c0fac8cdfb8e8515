"""Tasks used by the tests of ``django_thread.tasks``, and by its parity run.

They are defined once, at module level as the framework requires, against
the ``default`` task backend: the tests point ``TASKS["default"]`` at
``ThreadPoolBackend``, and ``parity_scenario.py`` points it at
django-tasks-db's ``DatabaseBackend``, without touching this module.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

from django.db import models, transaction
from django.utils import translation
from django.utils.safestring import mark_safe

from testproject.jobs.models import Record

try:  # Django >= 6.0
    from django.tasks import TaskResultStatus, task, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import TaskResultStatus, task, task_backends  # type: ignore[no-redef]
    from django_tasks.exceptions import (  # type: ignore[no-redef,assignment]
        InvalidTaskError as InvalidTask,
    )
    from django_tasks.exceptions import (
        TaskResultDoesNotExist,
    )
    from django_tasks.signals import (  # type: ignore[no-redef,assignment]
        task_enqueued,
        task_finished,
        task_started,
    )

__all__ = [
    "InvalidTask",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

#: Events a test opens to let a held task finish, by name.
GATES: dict[str, threading.Event] = {}
#: Labels in the order tasks ran, for the priority tests.
ORDER: list[str] = []
ORDER_LOCK = threading.Lock()

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What the worker received, with the Python types it arrived as."""
    return {
        "args": args,
        "kwargs": kwargs,
        "types": [type(arg).__name__ for arg in args],
    }


@task
def return_tuple_and_int_keys() -> Any:
    return (1, 2), {1: "one"}


@task
def return_unserializable() -> Any:
    return {1, 2}


class Weekday(models.IntegerChoices):
    """An ``int`` subclass: JSON turns it into a plain ``int``."""

    MONDAY = 1


@task
def return_scalar(kind: str) -> Any:
    """A scalar return value: exact types, and ones a JSON trip changes."""
    return {
        "int": 7,
        "float": 2.5,
        "safe string": mark_safe("<b>"),
        "int enum": Weekday.MONDAY,
        "nan": float("nan"),
    }[kind]


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task
def exit_worker() -> None:
    raise SystemExit(3)


@task
def whoami() -> str:
    return threading.current_thread().name


@task
def hold(gate: str) -> str:
    if not GATES[gate].wait(timeout=10):
        raise TimeoutError(f"gate {gate!r} was never opened")
    return gate


@task
def record_order(label: str) -> str:
    with ORDER_LOCK:
        ORDER.append(label)
    return label


@task
def write_record(alias: str, name: str, value: int = 0) -> int:
    Record.objects.using(alias).create(name=name, value=value)
    return Record.objects.using(alias).filter(name=name).count()


@task
def count_records(alias: str, name: str) -> int:
    return Record.objects.using(alias).filter(name=name).count()


@task
def query_missing_table(alias: str) -> None:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_here")


@task
def leak_transaction(alias: str, name: str) -> str:
    """Leave an atomic block open, as a buggy task might."""
    transaction.atomic(using=alias).__enter__()
    Record.objects.using(alias).create(name=name)
    return name


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task
async def async_write_record(alias: str, name: str) -> int:
    await Record.objects.using(alias).acreate(name=name)
    return await Record.objects.using(alias).filter(name=name).acount()


@task(takes_context=True)
def context_info(context: Any, label: str) -> dict[str, Any]:
    return {
        "label": label,
        "attempt": context.attempt,
        "id": context.task_result.id,
        "worker_ids": list(context.task_result.worker_ids),
    }


@task
def read_context() -> dict[str, Any]:
    return {
        "request_id": REQUEST_ID.get("unset"),
        "language": translation.get_language(),
    }


@task
def set_context(value: str) -> str:
    REQUEST_ID.set(value)
    translation.activate("fr")
    return value
