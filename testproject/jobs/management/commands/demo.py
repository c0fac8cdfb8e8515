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

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from testproject.jobs.demo.blocks import (
    BATCHES_AFTER_KILL,
    JOBS,
    LEAKING,
    PREFIX,
    WORKERS,
    Block,
    callers_transaction_block,
    dead_connections_block,
    leaked_atomic_block,
    left_open_block,
    run_block,
)
from testproject.jobs.demo.database import Database
from testproject.jobs.demo.report import Report
from testproject.jobs.models import Record


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
            run_block(dead_connections_block, db),
            run_block(left_open_block, db),
            run_block(leaked_atomic_block, db),
            run_block(callers_transaction_block, db),
        ]
        report = Report(self.stdout)
        report.write_intro(db)
        report.write_table(blocks)
        report.write_notes(blocks)
        report.write_outro(db)
        self.verify(db, blocks)

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
