"""Testing support: background work inside TestCase, on the test's connections.

The ``TestCase`` classes and the pytest-django tests here are written as a
project would write them; the other tests check what they rely on: that the
test's connection is never closed, rolled back or discarded by a unit, that
units take turns on it, and that without the helper the same test fails the
way README.rst says.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import unittest

import pytest
from django.core.signals import request_started
from django.db import connections, transaction
from django.test import TestCase, override_settings

from django_thread import Thread, ThreadPoolExecutor, Timer, unit_of_work
from django_thread.tasks.compat import TaskResultDoesNotExist
from django_thread.testing import share_test_connections
from testproject.jobs.models import Record
from tests import background
from tests.helpers import database_settings, wait_for

DATABASES = {"sqlite": "default", "postgresql": "postgres"}


# --- As a project would write them -------------------------------------------


class BackgroundWorkTests(TestCase):
    """Work submitted from a TestCase sees the test's rows and rolls back with it."""

    using = "default"
    databases = {"default"}

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        # The test's transaction is rolled back: nothing the work wrote remains.
        assert not Record.objects.using(cls.using).filter(name="order").exists()

    @share_test_connections
    def test_jobs_read_and_write_the_rows_of_the_test(self) -> None:
        Record.objects.using(self.using).create(name="order", value=0)
        futures = [
            background.executor.submit(background.bump, "order", self.using)
            for _ in range(5)
        ]
        self.assertEqual(sorted(f.result() for f in futures), [1, 2, 3, 4, 5])
        self.assertEqual(Record.objects.using(self.using).get(name="order").value, 5)

    @share_test_connections
    def test_a_job_can_wait_for_jobs_it_submitted(self) -> None:
        for name in ("a", "b", "c"):
            Record.objects.using(self.using).create(name=name)
        future = background.executor.submit(
            background.bump_all, ["a", "b", "c"], self.using
        )
        self.assertEqual(future.result(timeout=60), [1, 1, 1])

    @share_test_connections
    def test_a_job_can_query_while_jobs_it_submitted_run(self) -> None:
        for name in ("a", "b", "c"):
            Record.objects.using(self.using).create(name=name)
        future = background.executor.submit(
            background.bump_all_and_count, ["a", "b", "c"], self.using
        )
        self.assertEqual(future.result(timeout=60), 3 + 3)

    @share_test_connections
    def test_a_thread_waiting_before_its_first_query_holds_nobody_up(self) -> None:
        Record.objects.using(self.using).create(name="order", value=0)
        gate = threading.Event()

        def later() -> None:
            gate.wait()
            background.bump("order", self.using)

        thread = Thread(target=later)
        thread.start()
        # The thread has started its unit and waits: the test and other
        # jobs still get their turns.
        self.assertEqual(
            background.executor.submit(background.bump, "order", self.using).result(
                timeout=60
            ),
            1,
        )
        gate.set()
        thread.join()
        self.assertEqual(Record.objects.using(self.using).get(name="order").value, 2)

    def test_threads_timers_and_units_see_the_test_rows(self) -> None:
        Record.objects.using(self.using).create(name="order", value=0)
        with share_test_connections():
            thread = Thread(target=background.bump, args=("order", self.using))
            thread.start()
            thread.join()
            timer = Timer(0.001, background.bump, args=("order", self.using))
            timer.start()
            timer.join()

            def third_party_thread() -> None:
                with unit_of_work():
                    background.bump("order", self.using)

            plain = threading.Thread(target=third_party_thread)
            plain.start()
            plain.join()
        self.assertEqual(Record.objects.using(self.using).get(name="order").value, 3)


class BackgroundWorkOnPostgreSQLTests(BackgroundWorkTests):
    using = "postgres"
    databases = {"default", "postgres"}


@share_test_connections
class WholeClassSharesTests(TestCase):
    databases = {"default", "postgres"}

    def test_every_test_of_the_class_shares(self) -> None:
        pk = Record.objects.using("postgres").create(name="row").pk
        self.assertEqual(
            background.executor.submit(
                lambda: Record.objects.using("postgres").get(pk=pk).name
            ).result(),
            "row",
        )


def finished(result):
    """Wait for a task as a test would: refresh until it is finished."""

    def done() -> bool:
        result.refresh()
        return result.is_finished

    wait_for(done, f"task {result.id} to finish")
    return result


@override_settings(
    TASKS={"default": {"BACKEND": "django_thread.tasks.ThreadPoolBackend"}}
)
class TasksTests(TestCase):
    databases = {"default", "postgres"}

    @share_test_connections
    def test_a_task_reads_and_writes_the_rows_of_the_test(self) -> None:
        Record.objects.using("postgres").create(name="order", value=0)
        result = finished(background.bump_task.enqueue("order", "postgres"))
        self.assertEqual(result.return_value, 1)
        self.assertEqual(Record.objects.using("postgres").get(name="order").value, 1)

    @share_test_connections
    def test_inside_the_tests_own_atomic_block_the_task_waits_for_the_commit(
        self,
    ) -> None:
        Record.objects.create(name="order", value=0)
        with self.captureOnCommitCallbacks() as callbacks:
            with transaction.atomic():
                result = background.bump_task.enqueue("order")
        self.assertIsNone(result.enqueued_at)
        self.assertEqual(len(callbacks), 1)
        callbacks[0]()  # what the commit would do
        self.assertEqual(finished(result).return_value, 1)


THREAD_POOL_TASKS = {"default": {"BACKEND": "django_thread.tasks.ThreadPoolBackend"}}
WITHOUT_THE_HELPER = "inside a TestCase's transaction, which never commits"


@pytest.mark.django_db  # TestCase's transaction
@override_settings(TASKS=THREAD_POOL_TASKS)
def test_a_task_enqueued_in_a_test_case_without_the_helper_says_what_is_missing():
    result = background.bump_task.enqueue("order")
    assert result.enqueued_at is None  # waiting for the commit
    with pytest.raises(TaskResultDoesNotExist) as missing:
        background.bump_task.get_result(result.id)
    assert WITHOUT_THE_HELPER in str(missing.value)
    assert "django_thread.testing.share_test_connections" in str(missing.value)


@pytest.mark.django_db(transaction=True)
@override_settings(TASKS=THREAD_POOL_TASKS)
def test_outside_a_test_case_a_missing_result_does_not_blame_it():
    with pytest.raises(TaskResultDoesNotExist) as missing:
        background.bump_task.get_result("no-such-id")
    assert WITHOUT_THE_HELPER not in str(missing.value)


@pytest.fixture(params=list(DATABASES.values()), ids=list(DATABASES))
def database(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.django_db(databases=["default", "postgres"])
def test_pytest_jobs_read_and_write_the_rows_of_the_test(
    database, share_test_connections
):
    Record.objects.using(database).create(name="order", value=0)
    futures = [
        background.executor.submit(background.bump, "order", database) for _ in range(3)
    ]
    assert sorted(f.result() for f in futures) == [1, 2, 3]
    pk = background.executor.submit(background.record, "new", database).result()
    assert Record.objects.using(database).filter(pk=pk).exists()


@pytest.mark.django_db(databases=["default", "postgres"])
def test_pytest_rows_of_the_previous_test_are_gone(database):
    # Runs after the test above (file order): its rows were rolled back.
    assert not Record.objects.using(database).filter(name__in=["order", "new"]).exists()


# --- What the helper relies on ------------------------------------------------


def run_test_case(case: type[TestCase]) -> unittest.TestResult:
    """Run a TestCase class the way a runner would, from inside a pytest test."""
    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(case).run(result)
    return result


class ReportTests(TestCase):
    """The user's test, defined once; the tests below run it with and without."""

    databases = {"default", "postgres"}
    using = "postgres"

    def test_job_reads_the_row_the_test_created(self) -> None:
        Record.objects.using(self.using).create(name="order", value=7)
        future = background.executor.submit(background.value_of, "order", self.using)
        self.assertEqual(future.result(), 7)

    def test_job_writes_a_row(self) -> None:
        background.executor.submit(background.record, "written", self.using).result()


ReportTests.__test__ = False  # run by the tests below, not collected

#: Outside a transaction, so that the TestCase inside makes its own.
outside_the_test_transaction = pytest.mark.django_db(
    transaction=True, databases=["default", "postgres"]
)


@outside_the_test_transaction
@pytest.mark.parametrize("database", list(DATABASES.values()), ids=list(DATABASES))
def test_without_the_helper_work_misses_the_test_rows(database):
    case = type("ReportTests", (ReportTests,), {"using": database})
    # SQLite would wait its 20 s timeout for the test's write lock.
    with database_settings("default", OPTIONS={"timeout": 0.05}):
        result = run_test_case(case)
    errors = {test.id().rsplit(".", 1)[1]: error for test, error in result.errors}
    failures = {test.id().rsplit(".", 1)[1]: error for test, error in result.failures}
    # The symptoms README.rst names: the job's own connection cannot see
    # the test's uncommitted row...
    assert "Record.DoesNotExist" in errors.pop(
        "test_job_reads_the_row_the_test_created"
    )
    if database == "default":
        # ...SQLite refuses a second writer while the test's transaction is open...
        assert "database is locked" in errors.pop("test_job_writes_a_row")
    else:
        # ...and the job's write is committed: it outlives the test's rollback.
        assert Record.objects.using(database).filter(name="written").exists()
    assert errors == failures == {}


@outside_the_test_transaction
@pytest.mark.parametrize("database", list(DATABASES.values()), ids=list(DATABASES))
def test_with_the_helper_the_same_test_case_passes_and_leaves_nothing(database):
    case = share_test_connections(
        type("ReportTests", (ReportTests,), {"using": database})
    )
    result = run_test_case(case)
    assert result.wasSuccessful(), result.errors + result.failures
    assert result.testsRun == 2
    assert not Record.objects.using(database).exists()


class Boom(Exception):
    pass


class SharedConnectionIsNeverCleanedUpTests(TestCase):
    databases = {"default", "postgres"}

    @share_test_connections
    def test_failing_jobs_and_thread_units_leave_the_test_connection_alone(
        self,
    ) -> None:
        connection = connections["postgres"]
        Record.objects.using("postgres").create(name="kept")

        def fail() -> None:
            Record.objects.using("postgres").count()
            raise Boom

        class Poller(Thread):
            # Units inside a unit: their request_started reaches Django's
            # close_old_connections while the test's connection is lent.
            def run(self) -> None:
                for _ in range(2):
                    with unit_of_work():
                        background.bump("kept", "postgres")

        with self.assertRaises(Boom):
            background.executor.submit(fail).result()
        poller = Poller()
        poller.start()
        poller.join()
        raw = connection.connection
        self.assertIsNotNone(raw)
        self.assertTrue(connection.in_atomic_block)
        self.assertEqual(Record.objects.using("postgres").get(name="kept").value, 2)
        self.assertIs(connection.connection, raw)


class UnitsTakeTurnsTests(TestCase):
    """Savepoints of concurrent units on one connection never interleave."""

    databases = {"default", "postgres"}

    def run_units(self, using: str) -> None:
        def unit(i: int) -> int:
            with transaction.atomic(using=using):
                Record.objects.using(using).create(name="outer", value=i)
                try:
                    with transaction.atomic(using=using):
                        Record.objects.using(using).create(name="rolled-back")
                        raise Boom
                except Boom:
                    pass
                with transaction.atomic(using=using):
                    Record.objects.using(using).create(name="inner", value=i)
            return i

        with share_test_connections(), ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(unit, i) for i in range(24)]
            # Meanwhile the test's own thread opens and leaves savepoints too.
            for i in range(24):
                with transaction.atomic(using=using):
                    Record.objects.using(using).create(name="test", value=i)
            self.assertEqual(sorted(f.result() for f in futures), list(range(24)))
        records = Record.objects.using(using)
        self.assertEqual(records.filter(name="outer").count(), 24)
        self.assertEqual(records.filter(name="inner").count(), 24)
        self.assertEqual(records.filter(name="test").count(), 24)
        self.assertFalse(records.filter(name="rolled-back").exists())

    def test_on_sqlite(self) -> None:
        self.run_units("default")

    def test_on_postgresql(self) -> None:
        self.run_units("postgres")


class WorkStaysConcurrentTests(TestCase):
    """Sharing changes the connections, not how the work runs."""

    databases = {"default"}

    @share_test_connections
    def test_threads_context_signals_and_exceptions_are_real(self) -> None:
        request_id = contextvars.ContextVar("request_id")
        request_id.set("r-1")
        started_in: list[str] = []

        def on_started(**kwargs: object) -> None:
            started_in.append(threading.current_thread().name)

        def job() -> tuple[str, str]:
            request_id.set("changed by the job")
            return threading.current_thread().name, Record.objects.count()

        request_started.connect(on_started)
        try:
            name, count = background.executor.submit(job).result()
        finally:
            request_started.disconnect(on_started)
        self.assertNotEqual(name, threading.current_thread().name)
        self.assertEqual(started_in, [name])
        self.assertEqual(request_id.get(), "r-1")

        failure = background.executor.submit(lambda: 1 / 0).exception()
        self.assertIsInstance(failure, ZeroDivisionError)

        hooked: list[type[BaseException]] = []
        previous, threading.excepthook = (
            threading.excepthook,
            lambda args: hooked.append(args.exc_type),
        )
        try:
            thread = Thread(target=lambda: Record.objects.get(name="missing"))
            thread.start()
            thread.join()
        finally:
            threading.excepthook = previous
        self.assertEqual(hooked, [Record.DoesNotExist])


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_a_unit_never_cleans_up_a_connection_django_shares_with_its_thread():
    # What LiveServerTestCase does for its server threads, with public API.
    connection = connections["postgres"]
    connection.ensure_connection()
    raw = connection.connection
    outcome: list[object] = []

    def server_thread() -> None:
        connections["postgres"] = connection
        try:
            with unit_of_work():
                transaction.atomic(using="postgres").__enter__()  # leaked
                Record.objects.using("postgres").create(name="leaked")
                raise Boom
        except Boom:
            pass
        outcome.append(connections["postgres"] is connection)
        outcome.append(connection.connection is raw)
        outcome.append(connection.in_atomic_block)

    connection.inc_thread_sharing()
    try:
        thread = threading.Thread(target=server_thread)
        thread.start()
        thread.join()
    finally:
        connection.dec_thread_sharing()
    # Not discarded from the thread, not closed, not rolled back: the leaked
    # block is the sharing thread's to end.
    assert outcome == [True, True, True]
    transaction.set_rollback(True, using="postgres")
    connection.atomic_blocks[-1].__exit__(None, None, None)
    assert not Record.objects.using("postgres").filter(name="leaked").exists()


def test_sharing_twice_from_one_thread_nests():
    with share_test_connections(), share_test_connections():
        pass
    from django_thread import sharing

    assert not sharing.lending()


class AsyncTestsShareToo(TestCase):
    """An ``async def`` test, its method decorated: as a project would write it."""

    databases = {"default", "postgres"}

    async def bump_from_the_event_loop(self, using: str) -> None:
        await Record.objects.using(using).acreate(name="order", value=0)
        futures = [
            asyncio.wrap_future(
                background.executor.submit(background.bump, "order", using)
            )
            for _ in range(3)
        ]
        self.assertEqual(sorted(await asyncio.gather(*futures)), [1, 2, 3])
        self.assertEqual(
            (await Record.objects.using(using).aget(name="order")).value, 3
        )

    @share_test_connections
    async def test_on_sqlite(self) -> None:
        await self.bump_from_the_event_loop("default")

    @share_test_connections()
    async def test_on_postgresql(self) -> None:
        await self.bump_from_the_event_loop("postgres")


@share_test_connections
class AsyncTestsOfASharedClass(AsyncTestsShareToo):
    """The class form: the same async tests, undecorated."""

    async def test_on_sqlite(self) -> None:
        await self.bump_from_the_event_loop("default")

    async def test_on_postgresql(self) -> None:
        await self.bump_from_the_event_loop("postgres")


@outside_the_test_transaction
@pytest.mark.parametrize("case", [AsyncTestsShareToo, AsyncTestsOfASharedClass])
def test_async_tests_share_as_sync_tests_do_and_leave_nothing(case):
    # Before: the method form raised TypeError when the class was defined.
    result = run_test_case(case)
    assert result.wasSuccessful(), result.errors + result.failures
    assert result.testsRun == 2
    assert not Record.objects.exists()
    assert not Record.objects.using("postgres").exists()


class WorkOutlivingItsTestTests(TestCase):
    databases = {"default"}

    def test_work_that_queries_after_the_test_ended_fails_loudly(self) -> None:
        gate = threading.Event()
        hooked: list[BaseException | None] = []

        def later() -> None:
            gate.wait()
            Record.objects.count()

        previous, threading.excepthook = (
            threading.excepthook,
            lambda args: hooked.append(args.exc_value),
        )
        try:
            with share_test_connections():
                thread = Thread(target=later)
                thread.start()
            gate.set()
            thread.join()
        finally:
            threading.excepthook = previous
        self.assertEqual(len(hooked), 1)
        self.assertIn("can only be used in that same thread", str(hooked[0]))
        # The test's connection is untouched.
        self.assertEqual(Record.objects.count(), 0)
