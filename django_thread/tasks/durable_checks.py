"""What DURABLE needs from the project: django-tasks-db, installed and migrated."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from typing import Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections

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
    messages: list[checks.CheckMessage] = []
    for alias, params in getattr(settings, "TASKS", {}).items():
        options = params.get("OPTIONS") if isinstance(params, Mapping) else None
        if not isinstance(options, Mapping) or not wants_durable(options):
            continue
        database = {**DEFAULT_OPTIONS, **options}["DATABASE"]
        if database not in databases or database not in connections:
            continue
        missing = missing_tables(database)
        if missing:
            messages.append(
                checks.Warning(
                    not_migrated_message(alias, database, missing)
                    + ": every enqueue will fail.",
                    hint=f"Run manage.py migrate --database {database}.",
                    id=W_DURABLE_NOT_MIGRATED,
                )
            )
    return messages


def missing_tables(database: str) -> list[str]:
    """The tables DURABLE needs that ``database`` lacks: not migrated yet."""
    from django_tasks_db.models import DBTaskResult

    from django_thread.models import WorkerLease

    tables = set(connections[database].introspection.table_names())
    return [
        model._meta.db_table
        for model in (DBTaskResult, WorkerLease)
        if model._meta.db_table not in tables
    ]


def not_migrated_message(alias: str, database: str, missing: list[str]) -> str:
    return (
        f"Task backend {alias!r} is DURABLE, but database {database!r} has no "
        f"table {', '.join(missing)}"
    )


def raise_if_not_migrated(alias: str, database: str, error: Exception) -> None:
    """After an enqueue's ``error``: say so clearly if the tables are missing.

    Asked only once the enqueue failed, so it costs nothing on success. Its
    savepoint (or transaction) is rolled back by then, so the connection
    can still answer, unless it broke, and then the error stands.
    """
    try:
        missing = missing_tables(database)
    except DatabaseError:
        return
    if missing:
        raise ImproperlyConfigured(
            f"{not_migrated_message(alias, database, missing)}. Run manage.py "
            f"migrate --database {database} ({W_DURABLE_NOT_MIGRATED})."
        ) from error
