"""The backend class: what ``TASKS["BACKEND"]`` names."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

from django_thread import sharing
from django_thread.internals import new_task_result
from django_thread.tasks.compat import (
    BaseTaskBackend,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from django_thread.tasks.durable_checks import (
    durable_errors,
    tasks_db_importable,
    wants_durable,
)
from django_thread.tasks.options import (
    DEFAULT_OPTIONS,
    E_APP_NOT_INSTALLED,
    option_errors,
)
from django_thread.tasks.pools import Pool, existing_pool, pool_for
from django_thread.tasks.results import (
    are_json_scalars,
    copy_result,
    new_id,
    update_result,
)
from django_thread.tasks.running import Job
from django_thread.thread_connections import atomic_block_open


class ThreadPoolBackend(BaseTaskBackend):
    """Run tasks on worker threads of this process, each as a unit of work.

    ``enqueue()`` returns at once with a READY result; the task runs on one
    of its queue's workers, by priority then arrival, not before its
    ``run_after``. Inside ``transaction.atomic()`` on OPTIONS["DATABASE"],
    the enqueue waits for the commit and is dropped on rollback (see
    :meth:`enqueue`). Results are kept in this process only.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __new__(cls, alias: str, params: Any) -> ThreadPoolBackend:
        """With ``OPTIONS["DURABLE"]``, a DurableBackend (django_thread.tasks.durable).

        Without django-tasks-db installed, a plain instance, whose check
        says what is missing and whose enqueue refuses to run.
        """
        if wants_durable(params.get("OPTIONS")) and tasks_db_importable():
            from django_thread.tasks.durable import durable_class_for

            return super().__new__(durable_class_for(cls))
        return super().__new__(cls)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> TaskResult[Any, Any]:
        """Queue the task; return its READY result at once.

        Arguments are serialized here, in the caller, so that a task that
        could not be sent to a distributed backend fails here too, with the
        framework's own error. Inside an atomic block on the configured
        database (with ``ENQUEUE_ON_COMMIT``), the returned result already
        has its id, but the task is only enqueued when the transaction
        commits: until then ``enqueued_at`` is None and ``get_result``
        raises ``TaskResultDoesNotExist``, and after a rollback it always
        will.
        """
        self.validate_task(task)
        fields = {
            "task": task,
            "id": new_id(),
            "status": TaskResultStatus.READY,
            "enqueued_at": None,
            "started_at": None,
            "last_attempted_at": None,
            "finished_at": None,
            "backend": self.alias,
            "errors": [],
            "worker_ids": [],
        }
        payload: str | None = None
        result: TaskResult[Any, Any]
        if are_json_scalars(args, kwargs):
            # normalize_json and the JSON round trip would both return these
            # as they are, in a list and a dict: skip both.
            result = new_task_result(
                TaskResult, **fields, args=list(args), kwargs=dict(kwargs)
            )
        else:
            # TaskResult normalizes the arguments (tuples to lists, bytes to
            # str) and raises the framework's errors for what it refuses;
            # the round trip does the rest (dict keys to str, NaN refused),
            # and its JSON is what the worker will deserialize.
            result = TaskResult(**fields, args=args, kwargs=kwargs)
            payload = json.dumps(
                {"args": result.args, "kwargs": result.kwargs}, allow_nan=False
            )
            arguments = json.loads(payload)
            update_result(result, args=arguments["args"], kwargs=arguments["kwargs"])
        pool = self._pool()
        returned = copy_result(result, errors=[], worker_ids=[])
        job = Job(result, payload)
        database = pool.options.database
        # atomic_block_open(), not on_commit() alone: outside a transaction
        # on_commit() would open a connection in the caller just to learn
        # that it is in autocommit mode. In a test that shares its
        # connections, the TestCase's own transaction counts as autocommit.
        if (
            pool.options.enqueue_on_commit
            and atomic_block_open(database)
            and not sharing.only_test_transaction_open(database)
        ):
            # The pool is looked up at commit time, in case TASKS changed.
            # robust: the caller's data is committed by then, so a failure is
            # logged (by Django) rather than raised past their other hooks.
            transaction.on_commit(
                lambda: self._pool().submit(job), using=database, robust=True
            )
        else:
            pool.submit(job)
            update_result(returned, enqueued_at=result.enqueued_at)
        return returned

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        pool = existing_pool(self.alias)
        if pool is not None:
            try:
                return pool.results.get(result_id)
            except TaskResultDoesNotExist:
                pass
        raise TaskResultDoesNotExist(self._missing_result(result_id))

    def _missing_result(self, result_id: str) -> str:
        """Why a result may be missing: the first question after a miss."""
        options = self.options if isinstance(self.options, Mapping) else {}
        values = {**DEFAULT_OPTIONS, **options}
        in_test_case = ""
        database = values["DATABASE"]
        if database in connections and sharing.unshared_test_transaction_open(database):
            in_test_case = (
                " This thread is inside a TestCase's transaction, which never "
                "commits: a task enqueued in it never runs. Decorate the test "
                "with django_thread.testing.share_test_connections (with "
                "pytest-django, request its share_test_connections fixture)."
            )
        return (
            f"No result {result_id!r} in task backend {self.alias!r} of process "
            f"{os.getpid()}. ThreadPoolBackend keeps results only in the memory "
            "of the process that enqueued the task: other processes never see "
            "them, and a restart or a change of TASKS loses them. Finished "
            f"results are dropped after RESULT_TTL={values['RESULT_TTL']!r} "
            f"seconds, and beyond the newest MAX_RESULTS={values['MAX_RESULTS']!r}. "
            "A task enqueued inside transaction.atomic() has no result until "
            "the commit, and none after a rollback." + in_test_case
        )

    async def aget_result(self, result_id: str) -> TaskResult[Any, Any]:
        # Results are in memory behind a short lock: no thread hop needed.
        return self.get_result(result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        # Not super(): a DurableBackend's next class is DatabaseBackend,
        # whose check would repeat durable_errors() without an id.
        messages = list(BaseTaskBackend.check(self, **kwargs))
        messages += option_errors(self.alias, self.options, self.queues)
        if wants_durable(self.options):
            messages += durable_errors(self.alias, self.options)
        messages += self._app_errors()
        return messages

    #: Set once validate_task() found django_thread installed.
    _app_seen_installed = False

    def validate_task(self, task: Any) -> None:
        """The framework's validation, and E109 raised where checks miss it.

        Without django_thread in INSTALLED_APPS nothing registers the Tasks
        framework's check before ``manage.py check`` collects the checks
        (Django 6 registers it when ``django.tasks`` is imported, the 5.2
        backport when its app is ready). A tasks module imported through
        the URLconf is imported by a check that is already running, too
        late for the framework's. But ``@task`` validates its task when the
        module is imported, so the error surfaces here, wherever the module
        is imported, rather than at the first ``enqueue()``.
        """
        super().validate_task(task)
        if not self._app_seen_installed:
            for error in self._app_errors():
                raise ImproperlyConfigured(f"{error.msg} {error.hint} ({error.id})")
            self._app_seen_installed = True

    def _app_errors(self) -> list[checks.CheckMessage]:
        from django.apps import apps

        if apps.is_installed("django_thread"):
            return []
        return [
            checks.Error(
                f"Task backend {self.alias!r} is a ThreadPoolBackend, but "
                "django_thread is not in INSTALLED_APPS.",
                hint="Add 'django_thread' to INSTALLED_APPS.",
                id=E_APP_NOT_INSTALLED,
            )
        ]

    def _pool(self) -> Pool:
        if wants_durable(self.options):  # a DurableBackend could not be built
            raise ImproperlyConfigured(
                " ".join(
                    str(error.msg) for error in durable_errors(self.alias, self.options)
                )
                or f"Task backend {self.alias!r} is DURABLE but not durable."
            )
        return pool_for(self.alias, self.options, self.queues, type(self))
