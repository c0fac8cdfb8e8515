"""Application code that hands work to threads, as the testing-support tests use it.

Written as a project would write it: the functions know nothing of tests.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from django_thread import ThreadPoolExecutor
from testproject.jobs.models import Record

try:  # Django >= 6.0
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]

#: A module-level pool, as projects keep one.
executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="background")


def bump(name: str, using: str = "default") -> int:
    """Read a row the caller created, add one in a savepoint, return the value."""
    with transaction.atomic(using=using):
        Record.objects.using(using).filter(name=name).update(value=F("value") + 1)
        return Record.objects.using(using).get(name=name).value


def value_of(name: str, using: str = "default") -> int:
    return Record.objects.using(using).get(name=name).value


def record(name: str, using: str = "default") -> int:
    return Record.objects.using(using).create(name=name).pk


def bump_all(names: list[str], using: str = "default") -> list[int]:
    """Fan out: a job that submits jobs and waits for them."""
    with ThreadPoolExecutor(max_workers=2) as inner:
        return [f.result() for f in [inner.submit(bump, n, using) for n in names]]


def bump_all_and_count(names: list[str], using: str = "default") -> int:
    """Fan out, query while the jobs run, then wait for them."""
    with ThreadPoolExecutor(max_workers=2) as inner:
        futures = [inner.submit(bump, n, using) for n in names]
        count = Record.objects.using(using).count()
        return count + sum(f.result() for f in futures)


@task
def bump_task(name: str, using: str = "default") -> int:
    return bump(name, using)
