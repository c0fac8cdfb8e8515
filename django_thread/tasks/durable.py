"""DURABLE: ThreadPoolBackend on django-tasks-db's table, run by in-process workers.

``OPTIONS = {"DURABLE": True}`` makes ``ThreadPoolBackend(...)`` build a
:class:`DurableBackend` (see ``ThreadPoolBackend.__new__``): a task is a row
of django-tasks-db's ``DBTaskResult``, written on the caller's connection,
so inside ``transaction.atomic()`` it exists if and only if the transaction
commits (a transactional outbox). The workers of
:mod:`django_thread.tasks.durable_engine` run it, in this process or any
other running the same backend.

The class is also a ``django_tasks_db.DatabaseBackend``: the rows are that
backend's rows, so django-tasks-db's ``db_worker`` and
``prune_db_task_results`` commands accept the alias, and its admin shows the
tasks. Only what must differ is overridden: rows go to ``OPTIONS["DATABASE"]``,
an enqueue wakes this process's workers, and the checks are
``ThreadPoolBackend``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import DatabaseError, transaction
from django_tasks_db.backend import DatabaseBackend
from django_tasks_db.backend import TaskResult as RowResult

from django_thread import sharing
from django_thread.tasks.backend import ThreadPoolBackend
from django_thread.tasks.compat import (
    BaseTaskBackend,
    TaskResultDoesNotExist,
    normalize_json,
    task_enqueued,
)
from django_thread.tasks.durable_checks import (
    durable_errors,
    raise_if_not_migrated,
    wants_durable,
)
from django_thread.tasks.durable_engine import Engine, engine_for
from django_thread.tasks.options import DEFAULT_OPTIONS, PoolOptions
from django_thread.thread_connections import atomic_block_open


class DurableBackend(ThreadPoolBackend, DatabaseBackend):
    """A ThreadPoolBackend whose tasks are django-tasks-db rows (DURABLE)."""

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> RowResult[Any, Any]:
        """Write the row in the caller's transaction; wake a worker after it commits.

        A failing ``task_enqueued`` receiver fails the enqueue and takes the
        row back (a savepoint inside the caller's transaction).
        """
        from django_tasks_db.models import DBTaskResult

        self.validate_task(task)
        engine = self.engine()
        database = engine.database
        try:
            with transaction.atomic(using=database):
                row = DBTaskResult.objects.using(database).create(
                    id=self._get_id(),
                    args_kwargs=normalize_json({"args": args, "kwargs": kwargs}),
                    priority=task.priority,
                    task_path=task.module_path,
                    queue_name=task.queue_name,
                    run_after=task.run_after,
                    backend_name=self.alias,
                )
                result = row.task_result
                task_enqueued.send(type(self), task_result=result)
        except DatabaseError as exc:
            raise_if_not_migrated(self.alias, database, exc)
            raise
        engine.ensure_started()
        # As ThreadPoolBackend.enqueue: outside a transaction, no on_commit().
        if atomic_block_open(database) and not sharing.only_test_transaction_open(
            database
        ):
            transaction.on_commit(engine.wake, using=database)
        else:
            engine.wake()
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> RowResult[Any, Any]:
        # Not DatabaseBackend's: it would skip the database option and the wake.
        return await BaseTaskBackend.aenqueue(self, task, args, kwargs)  # type: ignore[return-value]

    def get_result(self, result_id: str) -> RowResult[Any, Any]:
        from django_tasks_db.models import DBTaskResult

        try:
            row = DBTaskResult.objects.using(self._database()).get(id=result_id)
        except (DBTaskResult.DoesNotExist, ValidationError):
            raise TaskResultDoesNotExist(result_id) from None
        return row.task_result

    async def aget_result(self, result_id: str) -> RowResult[Any, Any]:
        from django_tasks_db.models import DBTaskResult

        try:
            row = await DBTaskResult.objects.using(self._database()).aget(id=result_id)
        except (DBTaskResult.DoesNotExist, ValidationError):
            raise TaskResultDoesNotExist(result_id) from None
        return row.task_result

    def engine(self) -> Engine:
        """This alias's workers in this process (built, not started)."""
        errors = durable_errors(self.alias, self.options)
        if errors:
            raise ImproperlyConfigured(f"{errors[0].msg} ({errors[0].id})")
        return engine_for(
            self.alias,
            PoolOptions.from_params(self.alias, self.options, self.queues),
            self.queues,
            type(self),
        )

    def _database(self) -> str:
        options = self.options if isinstance(self.options, Mapping) else {}
        return str({**DEFAULT_OPTIONS, **options}["DATABASE"])


@functools.cache
def durable_class_for(cls: type[ThreadPoolBackend]) -> type[DurableBackend]:
    """``DurableBackend``, or for a subclass of ThreadPoolBackend, both combined."""
    if issubclass(cls, DurableBackend):
        return cls
    if cls is ThreadPoolBackend:
        return DurableBackend
    return type(cls.__name__, (cls, DurableBackend), {"__module__": cls.__module__})


def start_durable_workers() -> None:
    """Start the workers of every DURABLE backend in ``TASKS``, in this process.

    They start by themselves on the first enqueue or request (or unit of
    work) of each process; call this where a process should run tasks
    before either, such as a dedicated worker process or gunicorn's
    ``post_fork``.
    """
    from django.conf import settings

    from django_thread.tasks.compat import task_backends

    for alias, params in getattr(settings, "TASKS", {}).items():
        # Only DURABLE aliases: building another backend here could fail.
        if isinstance(params, Mapping) and wants_durable(params.get("OPTIONS")):
            backend = task_backends[alias]
            if isinstance(backend, DurableBackend):
                backend.engine().ensure_started()
