"""``manage.py demo``: the same jobs through the standard pool and django_thread's.

Each pool runs ten jobs on a single worker, so their order, and which worker
inherits what, is deterministic. Every job writes a ``Record``; the fifth one
also enters ``transaction.atomic()`` and never leaves it, a bug that Django's
request cleanup would contain in a view but that nothing contains in a plain
thread pool. The table shows what each pool made of it: jobs that returned
or raised, rows really committed, and worker connections still open after
``shutdown(wait=True)``.

Three pools run: ``concurrent.futures`` as is; ``concurrent.futures`` with
the usual hand-written fix, ``close_old_connections()`` around each job; and
``django_thread.ThreadPoolExecutor``. Only the last must come out clean, and
the command fails if it does not, so CI can run it as a smoke test.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection, transaction
from django.db.backends.signals import connection_created

import django_thread
from testproject.jobs.models import Record

JOBS = 10
LEAKING_JOB = 4
#: Every row the demo writes starts with this, so reruns can clear them.
PREFIX = "demo:"

Job = Callable[[str, int], None]


def write_record(pool: str, number: int) -> None:
    Record.objects.create(name=f"{PREFIX}{pool}:{number}", value=number)


def leak_transaction(pool: str, number: int) -> None:
    """The bug: an atomic block entered and never exited, then a write in it."""
    transaction.atomic().__enter__()
    Record.objects.create(name=f"{PREFIX}{pool}:leaked", value=number)


def as_is(job: Job) -> Job:
    return job


def with_close_old_connections(job: Job) -> Job:
    """The usual hand-written fix: Django's per-request cleanup around each job."""

    def run(pool: str, number: int) -> None:
        close_old_connections()
        try:
            job(pool, number)
        finally:
            close_old_connections()

    return run


#: (label, key for row names, executor class, how each job is wrapped)
POOLS: list[tuple[str, str, type[futures.Executor], Callable[[Job], Job]]] = [
    ("concurrent.futures", "stdlib", futures.ThreadPoolExecutor, as_is),
    (
        "concurrent.futures + close_old_connections()",
        "stdlib-close",
        futures.ThreadPoolExecutor,
        with_close_old_connections,
    ),
    ("django_thread", "django_thread", django_thread.ThreadPoolExecutor, as_is),
]


@dataclass
class Outcome:
    ok: int = 0
    failed: int = 0
    committed: int = 0
    left_open: int = 0
    first_error: str = ""


class WorkerConnections:
    """The connections Django opened in other threads, via a public signal.

    Holding the wrappers keeps them alive, so an open one is a connection that
    nobody closed, not one the garbage collector has not reached yet. A
    wrapper that reconnects (MySQL's backend connects twice on first use)
    is recorded once.
    """

    def __init__(self) -> None:
        self.wrappers: dict[int, Any] = {}
        self._main = threading.get_ident()

    def record(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if threading.get_ident() != self._main:
            self.wrappers[id(connection)] = connection

    def still_open(self) -> list[Any]:
        # A wrapper closed inside an atomic block keeps its (closed) driver
        # connection and says so in closed_in_transaction.
        return [
            w
            for w in self.wrappers.values()
            if w.connection is not None and not w.closed_in_transaction
        ]


def run_pool(
    key: str, executor_class: type[futures.Executor], wrap: Callable[[Job], Job]
) -> Outcome:
    jobs = [
        leak_transaction if number == LEAKING_JOB else write_record
        for number in range(JOBS)
    ]
    outcome = Outcome()
    tracker = WorkerConnections()
    connection_created.connect(tracker.record, weak=False)
    # The collector would close leaked connections at a random moment.
    gc.disable()
    try:
        executor = executor_class(max_workers=1)
        submitted = [
            executor.submit(wrap(job), key, number) for number, job in enumerate(jobs)
        ]
        executor.shutdown(wait=True)
        for future in submitted:
            error = future.exception()
            if error is None:
                outcome.ok += 1
            else:
                outcome.failed += 1
                outcome.first_error = outcome.first_error or (
                    f"{type(error).__name__}: {error}".strip()
                )
        leaked = tracker.still_open()
        outcome.left_open = len(leaked)
    finally:
        connection_created.disconnect(tracker.record)
        gc.enable()
    # Close what the pool left open (rolling back its transaction), so that
    # the rows below are the committed ones and SQLite's write lock is free.
    for wrapper in leaked:
        wrapper.connection.close()
    outcome.committed = (
        Record.objects.filter(name__startswith=f"{PREFIX}{key}:")
        .exclude(name__endswith=":leaked")
        .count()
    )
    return outcome


class Command(BaseCommand):
    help = (
        "Run the same jobs, one leaking a transaction, through "
        "concurrent.futures and django_thread thread pools, and compare."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # A fresh clone has no tables yet.
        call_command("migrate", verbosity=0, interactive=False)
        Record.objects.filter(name__startswith=PREFIX).delete()

        settings = connection.settings_dict
        self.stdout.write(
            f"{JOBS} jobs on one worker, each writes a row; job {LEAKING_JOB + 1} "
            f"also leaves transaction.atomic() open.\n"
            f"Database: {connection.vendor} {settings['NAME']}, "
            f"CONN_MAX_AGE={settings['CONN_MAX_AGE']}\n"
        )
        outcomes = {label: run_pool(key, cls, wrap) for label, key, cls, wrap in POOLS}
        self.write_table(outcomes)

        ours = outcomes["django_thread"]
        if (ours.ok, ours.committed, ours.left_open) != (JOBS, JOBS - 1, 0):
            raise CommandError(f"django_thread did not contain the leak: {ours}")

    def write_table(self, outcomes: dict[str, Outcome]) -> None:
        headers = ("pool", "jobs ok", "failed", "rows committed", "left open")
        rows = [
            (
                label,
                str(o.ok),
                str(o.failed),
                f"{o.committed}/{JOBS - 1}",
                str(o.left_open),
            )
            for label, o in outcomes.items()
        ]
        widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(5)]
        for row in [headers, *rows]:
            cells = [
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            self.stdout.write("  ".join(cells))
        self.stdout.write(
            "\nrows committed: rows of the jobs other than the leaking one that "
            "reached the database.\nleft open: worker connections still open "
            "after shutdown(wait=True), with the garbage collector off."
        )
        for label, o in outcomes.items():
            if o.first_error:
                self.stdout.write(f"{label}: {o.failed} jobs raised {o.first_error}")
