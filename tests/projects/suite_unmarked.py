"""A project's pytest module: a test without database access after one with it.

The first test makes every worker of the module-level pool open a connection
of its own, which it keeps (``CONN_MAX_AGE``); the second submits work that
needs no database, while pytest-django forbids database access.
"""

from __future__ import annotations

import threading

import pytest

from testproject.jobs.models import Record
from tests import background

WORKERS = 4


@pytest.mark.django_db(transaction=True)
def test_every_worker_keeps_a_connection():
    together = threading.Barrier(WORKERS, timeout=30)

    def count() -> int:
        together.wait()  # so that each job runs on a worker of its own
        return Record.objects.count()

    futures = [background.executor.submit(count) for _ in range(WORKERS)]
    assert [f.result() for f in futures] == [0] * WORKERS


def test_work_without_the_database_runs_without_database_access():
    futures = [background.executor.submit(lambda: 1) for _ in range(2 * WORKERS)]
    assert [f.result() for f in futures] == [1] * 2 * WORKERS
