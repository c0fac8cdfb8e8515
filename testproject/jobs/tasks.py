"""A task for the Tasks framework (``django.tasks``, or the backport on 5.2)."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]

from testproject.jobs import background


@task
def record(name: str) -> int:
    """Write one row; return the database session that wrote it."""
    return background.record(name)
