"""``manage.py demo``: every failure django_thread fixes, side by side.

The same jobs run three ways: through ``concurrent.futures`` as they are,
through ``concurrent.futures`` with the usual hand-written fix
(``close_old_connections()`` before and after each job), and through
``django_thread.ThreadPoolExecutor``. Four blocks of jobs each show one
failure that README.rst lists:

1. the workers' connections die (the server ends them; on SQLite, which has
   no server, the demo closes them behind Django's back, and says so);
2. the workers' connections stay open after the pool has shut down;
3. a job leaves ``transaction.atomic()`` open and poisons its worker;
4. work submitted inside the caller's ``atomic()`` must leave the caller's
   transaction alone.

Barriers make each worker run exactly one job of a batch, so the numbers are
the same on every run. The command checks its own claims (django_thread
comes out clean, the standard pool does not) and fails otherwise, so that CI
and ``tests/test_demo.py`` notice if the demo stops demonstrating.

SQLite by default; ``TESTPROJECT_DATABASE_URL=postgresql://...`` runs it on
PostgreSQL, where the connections are really terminated by the server. The
demo tags its connections with its own ``application_name`` and only ever
terminates those, so it is safe on a shared server.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection, transaction
from django.db.backends.signals import connection_created

import django_thread
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
#: Width of the printed text.
WIDTH = 79
#: How long a batch waits for every worker to hold one of its jobs.
BARRIER_TIMEOUT = 10.0

Job = Callable[..., Any]


# --- The three ways to run a job ------------------------------------------


def as_written(job: Job) -> Job:
    return job


def with_close_old_connections(job: Job) -> Job:
    """The usual hand-written fix: Django's per-request cleanup around each job."""

    def run(*args: Any) -> Any:
        close_old_connections()
        try:
            return job(*args)
        finally:
            close_old_connections()

    return run


@dataclass(frozen=True)
class Column:
    key: str
    executor_class: type[futures.ThreadPoolExecutor]
    wrap: Callable[[Job], Job]
    description: str


COLUMNS = [
    Column(
        "stdlib",
        futures.ThreadPoolExecutor,
        as_written,
        "concurrent.futures.ThreadPoolExecutor; jobs run as written.",
    ),
    Column(
        "recipe",
        futures.ThreadPoolExecutor,
        with_close_old_connections,
        "the same pool, with Django's close_old_connections() called before "
        "and after each job: the usual hand-written fix.",
    ),
    Column(
        "django_thread",
        django_thread.ThreadPoolExecutor,
        as_written,
        "django_thread.ThreadPoolExecutor; jobs run as written.",
    ),
]


# --- Jobs -----------------------------------------------------------------


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


def at_barrier(barrier: threading.Barrier, job: Job, *args: Any) -> Any:
    barrier.wait()
    return job(*args)


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return text if len(text) <= 90 else text[:87] + "..."


# --- Watching a pool's connections ----------------------------------------


class WorkerConnections:
    """The connections Django opened in other threads, via a public signal.

    Holding the wrappers keeps them alive, so an open one is a connection that
    nobody closed, not one the garbage collector has not reached yet. A
    wrapper that reconnects is recorded once.
    """

    def __init__(self) -> None:
        self.wrappers: dict[int, Any] = {}
        self._main = threading.get_ident()
        self._lock = threading.Lock()

    def record(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if threading.get_ident() != self._main:
            with self._lock:
                self.wrappers[id(connection)] = connection

    def still_open(self) -> list[Any]:
        # A wrapper closed inside an atomic block keeps its (closed) driver
        # connection and says so in closed_in_transaction.
        return [
            w
            for w in self.wrappers.values()
            if w.connection is not None and not w.closed_in_transaction
        ]


class Pool:
    """One column's executor, and the connections its workers open."""

    def __init__(self, column: Column, workers: int) -> None:
        self.column = column
        self.workers = workers
        self.connections = WorkerConnections()
        connection_created.connect(self.connections.record, weak=False)
        self.executor = column.executor_class(max_workers=workers)

    def submit(self, job: Job, *args: Any) -> futures.Future[Any]:
        return self.executor.submit(self.column.wrap(job), *args)

    def batch(self, job: Job, *args: Any) -> list[futures.Future[Any]]:
        """One job per worker: each waits at a barrier until all are running."""
        barrier = threading.Barrier(self.workers, timeout=BARRIER_TIMEOUT)
        submitted = [
            self.submit(at_barrier, barrier, job, *args) for _ in range(self.workers)
        ]
        futures.wait(submitted)
        return submitted

    def shutdown(self) -> list[Any]:
        """Shut the pool down; return the worker connections still open."""
        self.executor.shutdown(wait=True)
        connection_created.disconnect(self.connections.record)
        return self.connections.still_open()


def close_all(wrappers: list[Any]) -> None:
    """Close what a pool left open, rolling back any transaction in it."""
    for wrapper in wrappers:
        wrapper.connection.close()


# --- The database under the demo ------------------------------------------


class Database:
    """The demo's database: settings per block, and killing or counting
    connections, on the server when there is one."""

    def __init__(self) -> None:
        self.settings = connection.settings_dict
        self.vendor = connection.vendor
        self.application_name = f"django_thread demo {os.getpid()}"
        if self.is_postgresql:
            # Tag the demo's connections, so that it only kills its own.
            options = self.settings.setdefault("OPTIONS", {})
            options["application_name"] = self.application_name
            connection.close()

    @property
    def is_postgresql(self) -> bool:
        return self.vendor == "postgresql"

    @contextmanager
    def settings_for_block(self, **overrides: Any) -> Iterator[None]:
        """Change this alias's settings for every thread (wrappers share them)."""
        saved = {key: self.settings.get(key) for key in overrides}
        connection.close()
        self.settings.update(overrides)
        try:
            yield
        finally:
            connection.close()
            self.settings.update(saved)

    def kill(self, pool: Pool, pids: list[int | None]) -> None:
        """End each worker's connection, as a server restart would."""
        if not self.is_postgresql:
            # No server: close the driver connection behind Django's back,
            # which leaves the wrapper as a dropped connection leaves it.
            for wrapper in pool.connections.still_open():
                wrapper.connection.close()
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid = ANY(%s) AND application_name = %s "
                "AND datname = current_database()",
                [[pid for pid in pids if pid is not None], self.application_name],
            )
        self.wait_for_server_count(0)

    def server_count(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND datname = current_database() AND pid <> pg_backend_pid()",
                [self.application_name],
            )
            return int(cursor.fetchone()[0])

    def wait_for_server_count(self, expected: int, timeout: float = 5.0) -> int:
        """The server ends a backend shortly after its client leaves: poll."""
        deadline = time.monotonic() + timeout
        while (count := self.server_count()) != expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return count

    def count_left_open(self, left_open: list[Any]) -> int:
        if not self.is_postgresql:
            return len(left_open)
        return self.wait_for_server_count(len(left_open))


# --- The four blocks --------------------------------------------------------


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


def interpreter_command() -> str:
    """This interpreter, as a command to copy: README's ``.venv/bin/python``.

    Relative to the current directory when it lives under it, as the
    README's first command creates it; absolute otherwise.
    """
    if not sys.executable:
        return "python"
    executable = Path(sys.executable)
    try:
        return shlex.quote(str(executable.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(executable))


class Command(BaseCommand):
    help = (
        "Run the same jobs through concurrent.futures, concurrent.futures with "
        "close_old_connections(), and django_thread, and show what breaks."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        db = Database()
        # A fresh clone has no tables yet.
        call_command("migrate", verbosity=0, interactive=False)
        Record.objects.filter(name__startswith=PREFIX).delete()

        blocks = [
            self.block(self.dead_connections_block, db),
            self.block(self.left_open_block, db),
            self.block(self.leaked_atomic_block, db),
            self.block(self.callers_transaction_block, db),
        ]
        self.write_intro(db)
        self.write_table(blocks)
        self.write_notes(blocks)
        self.write_outro(db)
        self.verify(db, blocks)

    def block(self, make: Callable[[Database], Block], db: Database) -> Block:
        with captured_log() as lines:
            block = make(db)
        block.log = lines
        return block

    # --- what each block runs -------------------------------------------

    def dead_connections_block(self, db: Database) -> Block:
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

    def left_open_block(self, db: Database) -> Block:
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

    def leaked_atomic_block(self, db: Database) -> Block:
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

    def callers_transaction_block(self, db: Database) -> Block:
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

    # --- output -----------------------------------------------------------

    def write_intro(self, db: Database) -> None:
        if db.is_postgresql:
            where = f"PostgreSQL, database {db.settings['NAME']}"
        elif db.vendor == "sqlite":
            path = Path(db.settings["NAME"]).resolve()
            if path.is_relative_to(Path.cwd()):
                path = path.relative_to(Path.cwd())
            where = f"SQLite, {path}"
        else:
            where = f"{db.vendor}, database {db.settings['NAME']}"
        self.stdout.write(f"The same jobs, run three ways, on {where}:\n")
        width = max(len(c.key) for c in COLUMNS)
        for column in COLUMNS:
            self.stdout.write(
                textwrap.fill(
                    f"{column.key.ljust(width)}  {column.description}",
                    width=WIDTH,
                    initial_indent="  ",
                    subsequent_indent=" " * (width + 4),
                )
            )
        self.stdout.write("")
        self.write_wrapped(
            "Every number below is counted while the demo runs: real jobs on real "
            "threads, rows read back from the database. Each block starts fresh "
            "pools, with the settings its rows name (CONN_MAX_AGE=0 where none "
            "is named)."
        )
        self.stdout.write("")

    def write_table(self, blocks: list[Block]) -> None:
        keys = [c.key for c in COLUMNS]
        labels = [f"   {row.label}" for block in blocks for row in block.rows]
        width = max(len(label) for label in labels)
        self.stdout.write(" " * width + "".join(f"  {key}" for key in keys))
        for block in blocks:
            self.stdout.write(block.title)
            for row in block.rows:
                cells = "".join(
                    f"  {str(row.cells[key].value).rjust(len(key))}" for key in keys
                )
                self.stdout.write(f"   {row.label}".ljust(width) + cells)

    def write_notes(self, blocks: list[Block]) -> None:
        self.stdout.write("\nWhy:")
        for block in blocks:
            number = block.title.split(".")[0]
            self.write_wrapped(f"{number}. {block.note}", hanging="   ")
            # The first error of each column, columns with the same one together.
            first: dict[str, str] = {}
            for row in block.rows:
                for key, cell in row.cells.items():
                    if cell.errors and key not in first:
                        first[key] = cell.errors[0]
            columns_by_error: dict[str, list[str]] = {}
            for key, error in first.items():
                columns_by_error.setdefault(error, []).append(key)
            for error, keys in columns_by_error.items():
                names = " and ".join(
                    [", ".join(keys[:-1]), keys[-1]] if keys[:-1] else keys
                )
                self.write_wrapped(f"First error in {names}: {error}", "   ", "   ")
            for line in block.log:
                self.write_wrapped(f"django_thread logged {line}", "   ", "   ")
        self.stdout.write("")
        self.write_wrapped(
            "django_thread logs to the 'django_thread' logger; the demo prints "
            "those lines under the block that caused them."
        )

    def write_wrapped(self, text: str, indent: str = "", hanging: str = "") -> None:
        self.stdout.write(
            textwrap.fill(
                text,
                width=WIDTH,
                initial_indent=indent,
                subsequent_indent=indent + hanging,
                break_on_hyphens=False,
                break_long_words=False,
            )
        )

    def write_outro(self, db: Database) -> None:
        if db.is_postgresql:
            return
        # pip install -e . installs no PostgreSQL driver.
        python = interpreter_command()
        self.stdout.write(
            "To run it on PostgreSQL (the database must exist), with a driver:\n"
            f'  {python} -m pip install "psycopg[binary]"\n'
            "  TESTPROJECT_DATABASE_URL=postgresql://USER@HOST:PORT/DATABASE "
            f"{python} testproject/manage.py demo"
        )

    def verify(self, db: Database, blocks: list[Block]) -> None:
        """Fail if the demo no longer shows what README.rst says it shows."""

        def column(key: str) -> list[int]:
            return [row.cells[key].value for block in blocks for row in block.rows]

        after = WORKERS * BATCHES_AFTER_KILL
        first_on_each_worker = WORKERS
        if db.is_postgresql:
            expected_ours = [first_on_each_worker, 0, 0, 0, 0, JOBS - 1, 2]
            expected_stdlib = [after, after, WORKERS, WORKERS, 0, LEAKING, 2]
        else:
            expected_ours = [first_on_each_worker, 0, 0, 0, JOBS - 1, 2]
            expected_stdlib = [after, WORKERS, WORKERS, 0, LEAKING, 2]
        problems = []
        if column("django_thread") != expected_ours:
            problems.append(
                f"django_thread column is {column('django_thread')}, "
                f"expected {expected_ours}"
            )
        if column("stdlib") != expected_stdlib:
            problems.append(
                f"stdlib column is {column('stdlib')}, expected {expected_stdlib}"
            )
        if problems:
            raise CommandError("The demo no longer shows it: " + "; ".join(problems))
