"""The tasks of benchmarks/durable.py: module-level, as the Tasks framework requires."""

from __future__ import annotations

from django.tasks import task


@task
def trivial() -> None:
    return None


@task
def one_query() -> int:
    from testproject.jobs.models import Record

    return Record.objects.filter(name="x").count()
