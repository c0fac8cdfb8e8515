"""Tasks the DURABLE tests run, in their own processes and in the test's."""

from __future__ import annotations

import os
import time

from django.db import transaction

from django_thread.tasks.compat import TaskContext
from testproject.jobs.models import Record

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]


@task(takes_context=True)
def chaos(context: TaskContext[..., None], seconds: float) -> int:
    """Log this run outside the task's transaction, work, then mark it done.

    ``run:<id>`` rows count the runs (committed at once, so a run cut off by
    kill -9 still counts); ``done:<id>`` is written in a transaction at the end.
    """
    task_id = context.task_result.id
    Record.objects.create(name=f"run:{task_id}", value=os.getpid())
    time.sleep(seconds)
    with transaction.atomic():
        Record.objects.create(name=f"done:{task_id}", value=os.getpid())
    return os.getpid()


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task
def pid() -> int:
    return os.getpid()
