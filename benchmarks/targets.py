"""The report's header, and its closing summary: each of issue 7's targets."""

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
    """Each target of the issue, with today's value (median ±half range)."""
    print("\nIssue 7's targets")
    database = "PostgreSQL" if ("PostgreSQL", "no-op") in matrices.get(1, {}) else None
    rows = []
    if database and 2 in matrices:
        values = matrices[2][(database, "query, CONN_MAX_AGE=0")]
        rows.append(
            (
                "query at CONN_MAX_AGE=0, 2 workers: ours/stdlib",
                "-",
                values,
                "ours",
                "stdlib",
            )
        )
        rows.append(
            (
                "  the same, persistent/stdlib",
                "≤ 1.15",
                values,
                "ours persistent",
                "stdlib",
            )
        )
    if database and 1 in matrices:
        values = matrices[1][(database, "no-op")]
        rows.append(("no-op, 1 worker: ours/floor", "≤ 1.15", values, "ours", "floor"))
        values = matrices[1][(database, "query, CONN_MAX_AGE=600")]
        rows.append(
            ("query at 600, 1 worker: ours/floor", "≤ 1.05", values, "ours", "floor")
        )
    if tasks:
        values = tasks["trivial"]
        rows.append(
            (
                "trivial tasks: backend/executor time",
                "≤ 1.5",
                values,
                "backend",
                "executor",
            )
        )
        values = tasks["one query, CONN_MAX_AGE=600"]
        rows.append(
            (
                "one-query tasks: local/backend time",
                "≥ 1.0",
                values,
                "django-tasks-local",
                "backend",
            )
        )
    for label, goal, values, side, reference in rows:
        today = (
            ratio(values, side, reference).format(digits=2) if side in values else "n/a"
        )
        print(f"  {label:<50}{today:>14}   target {goal}")
