"""The report's header, and its closing summary: each of issue 14's targets."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from benchmarks.timing import ratio

Matrix = dict[tuple[str, str], dict[str, list[float]]]


def print_header(url: str | None, rounds: int) -> None:
    import django

    import django_thread
    from benchmarks.configuration import tasks_local_version
    from benchmarks.jobs import supports_persistent_connections

    persistent = "yes" if supports_persistent_connections() else "n/a (not available)"
    print(
        f"Python {sys.version.split()[0]}, Django {django.get_version()}, "
        f"django-thread {django_thread.__version__}, {os.cpu_count()} CPUs "
        f"({platform.machine()})"
    )
    print(f"PostgreSQL: {server_version() if url else 'not measured'}")
    print(f"django-tasks-local: {tasks_local_version() or 'not installed'}")
    print(f"persistent connections: {persistent}")
    print(f"{rounds} interleaved rounds per measurement; ratios are per round")


def server_version() -> str:
    from django.db import connections

    with connections["pg"].cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    connections["pg"].close()
    return version


def print_targets(
    matrices: dict[int, Matrix], tasks: dict[str, Any], persistent: bool
) -> None:
    """Each target of issue 14, with today's value (median ±half range).

    The executor's rows are read from PostgreSQL when it ran, else SQLite.
    """
    print("\nIssue 14's targets")
    database = (
        "PostgreSQL" if ("PostgreSQL", "no-op") in matrices.get(1, {}) else "SQLite"
    )
    rows = []
    if tasks and "django-tasks-local" in tasks["trivial"]:
        rows.append(
            (
                "trivial tasks: backend/django-tasks-local time",
                "≤ 1.0",
                tasks["trivial"],
                "backend",
                "django-tasks-local",
            )
        )
        rows.append(
            (
                "one-query tasks: backend/django-tasks-local time",
                "≤ 1.0",
                tasks["one query, CONN_MAX_AGE=600"],
                "backend",
                "django-tasks-local",
            )
        )
    if tasks:
        rows.append(
            (
                "  trivial tasks: backend/executor time",
                "-",
                tasks["trivial"],
                "backend",
                "executor",
            )
        )
    if 2 in matrices:
        values = matrices[2][(database, "query, CONN_MAX_AGE=0")]
        if persistent:
            rows.append(
                (
                    "query at CONN_MAX_AGE=0, 2 workers: pers/keep floor",
                    "≤ 1.03",
                    values,
                    "ours persistent",
                    "keep floor",
                )
            )
        values = matrices[2][(database, "query, CONN_MAX_AGE=600")]
        rows.append(
            ("query at 600, 2 workers: ours/floor", "≤ 1.03", values, "ours", "floor")
        )
    if 1 in matrices:
        values = matrices[1][(database, "no-op")]
        rows.append(("no-op, 1 worker: ours/floor", "≤ 1.05", values, "ours", "floor"))
    for label, goal, values, side, reference in rows:
        today = (
            ratio(values, side, reference).format(digits=2) if side in values else "n/a"
        )
        print(f"  {label:<54}{today:>14}   target {goal}")
