"""What DURABLE needs from the project: django-tasks-db, installed and migrated."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from typing import Any

from django.apps import apps
from django.core import checks
from django.db import connections

from django_thread.tasks.options import (
    DEFAULT_OPTIONS,
    E_DURABLE_NEEDS_TASKS_DB,
    W_DURABLE_NOT_MIGRATED,
)


def wants_durable(options: Any) -> bool:
    return isinstance(options, Mapping) and options.get("DURABLE") is True


def tasks_db_importable() -> bool:
    return importlib.util.find_spec("django_tasks_db") is not None


def durable_errors(alias: str, options: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """A DURABLE backend needs django-tasks-db, installed and in INSTALLED_APPS."""
    if tasks_db_importable() and apps.is_installed("django_tasks_db"):
        return []
    return [
        checks.Error(
            f"Task backend {alias!r} is DURABLE, but django-tasks-db is not "
            "installed or 'django_tasks_db' is not in INSTALLED_APPS.",
            hint=(
                'pip install "django-thread[db]", add "django_tasks_db" to '
                "INSTALLED_APPS, then run manage.py migrate."
            ),
            id=E_DURABLE_NEEDS_TASKS_DB,
        )
    ]


def check_durable_tables(
    app_configs: Any = None, databases: Iterable[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Each DURABLE backend's tables exist in its DATABASE.

    A database check (``Tags.database``): it runs only when a command asks
    for one (``check --database``, ``migrate``), as Django's own do. A
    warning, not an error: ``migrate`` runs it before migrating, and an
    error would stop the very command that creates the tables.
    """
    from django.conf import settings

    if not databases or not tasks_db_importable():
        return []
    if not apps.is_installed("django_tasks_db"):
        return []
    from django_tasks_db.models import DBTaskResult

    from django_thread.models import WorkerLease

    messages: list[checks.CheckMessage] = []
    for alias, params in getattr(settings, "TASKS", {}).items():
        options = params.get("OPTIONS") if isinstance(params, Mapping) else None
        if not isinstance(options, Mapping) or not wants_durable(options):
            continue
        database = {**DEFAULT_OPTIONS, **options}["DATABASE"]
        if database not in databases or database not in connections:
            continue
        tables = set(connections[database].introspection.table_names())
        missing = [
            model._meta.db_table
            for model in (DBTaskResult, WorkerLease)
            if model._meta.db_table not in tables
        ]
        if missing:
            messages.append(
                checks.Warning(
                    f"Task backend {alias!r} is DURABLE, but database "
                    f"{database!r} has no table {', '.join(missing)}: every "
                    "enqueue will fail.",
                    hint=f"Run manage.py migrate --database {database}.",
                    id=W_DURABLE_NOT_MIGRATED,
                )
            )
    return messages
