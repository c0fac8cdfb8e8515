"""A project's tests of code that hands work to a module-level pool and to tasks.

Run by pytest-django and by ``manage.py test`` (which ignores the pytest
functions). The shared tests need ``share_test_connections``; the
transactional one makes the pool's workers and the Tasks workers open and
keep connections of their own, which the runner must release before it
destroys the test database.
"""

from __future__ import annotations

import time

import pytest
from django.test import TestCase, TransactionTestCase

from django_thread.testing import share_test_connections
from testproject.jobs.models import Record
from tests import background


def finished(result):
    deadline = time.monotonic() + 30
    while not result.is_finished:
        assert time.monotonic() < deadline, "the task did not finish"
        time.sleep(0.01)
        result.refresh()
    return result


class OrdersTests(TestCase):
    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        assert not Record.objects.exists(), "the tests' rows outlived them"

    @share_test_connections
    def test_jobs_and_tasks_read_and_write_the_rows_of_the_test(self) -> None:
        Record.objects.create(name="order", value=0)
        futures = [
            background.executor.submit(background.bump, "order") for _ in range(3)
        ]
        self.assertEqual(sorted(f.result() for f in futures), [1, 2, 3])
        self.assertEqual(
            finished(background.bump_task.enqueue("order")).return_value, 4
        )
        self.assertEqual(Record.objects.get(name="order").value, 4)


class PoolsHoldConnectionsTests(TransactionTestCase):
    def test_workers_keep_their_own_connections(self) -> None:
        background.executor.submit(background.record, "committed").result()
        finished(background.bump_task.enqueue("committed"))
        self.assertEqual(Record.objects.get(name="committed").value, 1)


@pytest.mark.django_db
def test_pytest_jobs_read_and_write_the_rows_of_the_test(share_test_connections):
    Record.objects.create(name="order", value=0)
    assert background.executor.submit(background.bump, "order").result() == 1
    assert finished(background.bump_task.enqueue("order")).return_value == 2


@pytest.mark.django_db
def test_pytest_rows_of_the_previous_test_are_gone():
    assert not Record.objects.filter(name="order").exists()
