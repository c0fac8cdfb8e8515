"""The demo's four blocks: the jobs each runs, and what it counts.

Barriers make each worker run exactly one job of a batch, so the numbers are
the same on every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from testproject.jobs.demo.database import Database
from testproject.jobs.demo.pools import COLUMNS, Column, Pool, close_all
from testproject.jobs.models import Record

#: Workers of the pools in blocks 1 and 2.
WORKERS = 2
#: Batches of WORKERS jobs run after the connections died, in block 1.
BATCHES_AFTER_KILL = 3
#: Jobs of block 3, on one worker; the one at LEAKING leaves atomic() open.
JOBS = 10
LEAKING = 4
#: CONN_MAX_AGE for persistent connections, as production settings use.
PERSISTENT = 600
#: Every row the demo writes starts with this, so reruns can clear them.
PREFIX = "demo:"


def query() -> None:
    Record.objects.exists()


def server_pid() -> int | None:
    """The server process of this thread's connection (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        query()
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def write_record(name: str, number: int) -> None:
    Record.objects.create(name=f"{name}:{number}", value=number)


def leak_transaction(name: str, number: int) -> None:
    """The bug: an atomic block entered and never exited, then a write in it."""
    transaction.atomic().__enter__()
    Record.objects.create(name=f"{name}:leaked", value=number)


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return text if len(text) <= 90 else text[:87] + "..."


@dataclass
class Cell:
    value: int
    errors: list[str] = field(default_factory=list)


@dataclass
class Row:
    label: str
    cells: dict[str, Cell]


@dataclass
class Block:
    title: str
    rows: list[Row]
    note: str
    #: django_thread log records emitted while the block ran.
    log: list[str] = field(default_factory=list)


def failures(submitted: list[futures.Future[Any]]) -> Cell:
    errors = [describe(e) for f in submitted if (e := f.exception()) is not None]
    return Cell(len(errors), errors)


def dead_connections(db: Database, column: Column, health_checks: bool) -> Cell:
    with db.settings_for_block(
        CONN_MAX_AGE=PERSISTENT, CONN_HEALTH_CHECKS=health_checks
    ):
        pool = Pool(column, WORKERS)
        pids = [f.result() for f in pool.batch(server_pid)]
        db.kill(pool, pids)
        after = [f for _ in range(BATCHES_AFTER_KILL) for f in pool.batch(query)]
        close_all(pool.shutdown())
    return failures(after)


def left_open(db: Database, column: Column, max_age: int) -> Cell:
    with db.settings_for_block(CONN_MAX_AGE=max_age):
        pool = Pool(column, WORKERS)
        errors = failures(pool.batch(query))
        still_open = pool.shutdown()
        count = db.count_left_open(still_open)
        close_all(still_open)
    return Cell(count, errors.errors)


def leaked_atomic(db: Database, column: Column) -> tuple[Cell, Cell]:
    name = f"{PREFIX}{column.key}"
    with db.settings_for_block(CONN_MAX_AGE=0):
        pool = Pool(column, 1)
        submitted = [
            pool.submit(
                leak_transaction if number == LEAKING else write_record, name, number
            )
            for number in range(JOBS)
        ]
        # Close what the pool left open (rolling back its transaction), so
        # that the rows counted below are the committed ones.
        close_all(pool.shutdown())
    committed = (
        Record.objects.filter(name__startswith=f"{name}:")
        .exclude(name__endswith=":leaked")
        .count()
    )
    return failures(submitted[LEAKING + 1 :]), Cell(committed)


def callers_transaction(db: Database, column: Column) -> Cell:
    name = f"{PREFIX}{column.key}:caller"
    errors = []
    with db.settings_for_block(CONN_MAX_AGE=0):
        pool = Pool(column, 1)
        try:
            with transaction.atomic():
                Record.objects.create(name=name, value=1)
                pool.submit(query).result()
                Record.objects.create(name=name, value=2)
        except Exception as exc:
            errors.append(describe(exc))
        close_all(pool.shutdown())
    return Cell(Record.objects.filter(name=name).count(), errors)


class LogRecords(logging.Handler):
    """Collects the django_thread logger's records, to print them explained."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage()}")


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """Route the django_thread logger here instead of the console, for a while."""
    logger = logging.getLogger("django_thread")
    handler = LogRecords()
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.handlers[:], logger.propagate = saved


def run_block(make: Callable[[Database], Block], db: Database) -> Block:
    with captured_log() as lines:
        block = make(db)
    block.log = lines
    return block


def dead_connections_block(db: Database) -> Block:
    after = WORKERS * BATCHES_AFTER_KILL
    rows = [
        Row(
            f"jobs that failed, of {after}, CONN_MAX_AGE={PERSISTENT}",
            {c.key: dead_connections(db, c, False) for c in COLUMNS},
        )
    ]
    if db.is_postgresql:
        rows.append(
            Row(
                "the same, with CONN_HEALTH_CHECKS=True",
                {c.key: dead_connections(db, c, True) for c in COLUMNS},
            )
        )
        how = (
            "The server ended each worker's connection (pg_terminate_backend), "
            "as a restart, a failover or an idle timeout does. stdlib: nothing "
            "drops the dead connection, so every later job on that worker "
            "fails. recipe and django_thread: Django drops it after the job "
            "that hit it, so only the first job on each worker fails; with "
            "CONN_HEALTH_CHECKS it tests the connection before a job's first "
            "query, so no job fails."
        )
    else:
        how = (
            "SQLite has no server that could end a connection, so the demo "
            "closes each worker's SQLite connection behind Django's back: "
            "Django's connection object is then in the state a connection "
            "dropped by a server leaves it in. Django's SQLite backend "
            "reports every connection as usable, so neither its own error "
            "handling (recipe) nor CONN_HEALTH_CHECKS replaces it. "
            "django_thread closes the connections of a job that raised "
            "(DJANGO_THREAD_CLOSE_ON_ERROR), so only the first job on each "
            "worker fails. For a real server-side kill, run the demo on "
            "PostgreSQL (see the last line)."
        )
    return Block(
        f"1. The workers' connections die, then {after} more jobs run "
        f"({WORKERS} workers)",
        rows,
        how,
    )


def left_open_block(db: Database) -> Block:
    counted = (
        "counted in pg_stat_activity"
        if db.is_postgresql
        else "counted as Django connections whose SQLite connection is open"
    )
    return Block(
        f"2. Connections still open after shutdown(wait=True), {WORKERS} workers",
        [
            Row(
                f"CONN_MAX_AGE={max_age}",
                {c.key: left_open(db, c, max_age) for c in COLUMNS},
            )
            for max_age in (0, PERSISTENT)
        ],
        f"Connections {counted}. A stdlib worker that exits closes nothing: "
        "its connections stay open until the garbage collector reaches them "
        "(the demo keeps them reachable to count them, then closes them). "
        "The recipe closes a connection after a job only once CONN_MAX_AGE "
        "says it is too old. django_thread's workers close theirs as they exit.",
    )


def leaked_atomic_block(db: Database) -> Block:
    cells = {c.key: leaked_atomic(db, c) for c in COLUMNS}
    later = JOBS - LEAKING - 1
    return Block(
        f"3. Job {LEAKING + 1} of {JOBS}, on one worker, leaves "
        "transaction.atomic() open",
        [
            Row(
                f"jobs after it that raised, of {later}",
                {key: pair[0] for key, pair in cells.items()},
            ),
            Row(
                f"rows of the other {JOBS - 1} jobs committed",
                {key: pair[1] for key, pair in cells.items()},
            ),
        ],
        "stdlib: the later jobs run inside the leaked transaction, report "
        "success, and their rows are never committed. recipe: "
        "close_old_connections() closes the connection in mid-transaction, "
        "and Django then refuses every later query on that worker. "
        "django_thread rolls the leaked transaction back, logs a warning, "
        "and gives the next job a fresh connection.",
    )


def callers_transaction_block(db: Database) -> Block:
    return Block(
        "4. In the caller's atomic(): write, submit a job and wait, write again",
        [
            Row(
                "caller's rows committed, of 2",
                {c.key: callers_transaction(db, c) for c in COLUMNS},
            )
        ],
        "Every column leaves the caller's connection alone: the job runs on "
        "the worker's own connection. django-thread 0.0.1 closed the "
        "caller's connections when work started, which lost this transaction.",
    )
