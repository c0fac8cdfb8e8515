"""``registry.release_connections()``: every worker lets go of its connections.

What a test runner calls before it destroys test databases, with pools
still alive that have held connections (``CONN_MAX_AGE`` above zero).
"""

from __future__ import annotations

import threading

import pytest
from django.test import override_settings
from django.test.runner import DiscoverRunner as DjangoDiscoverRunner

from django_thread import ThreadPoolExecutor, registry
from django_thread.tasks import reset_pools
from django_thread.testing import ReleaseConnectionsMixin
from testproject.jobs.models import Record
from tests.helpers import database_settings, server_connection_count, wait_for
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished

pytestmark = pytest.mark.django_db(transaction=True)


TASKS = {
    "default": {
        "BACKEND": "django_thread.tasks.ThreadPoolBackend",
        "OPTIONS": {"WORKERS": 2},
    }
}


def test_idle_executor_and_task_workers_close_their_connections(server_alias):
    alias = server_alias
    with database_settings(alias, CONN_MAX_AGE=600), override_settings(TASKS=TASKS):
        executor = ThreadPoolExecutor(max_workers=3)
        try:
            barrier = threading.Barrier(3)

            def write(i):
                barrier.wait(10)  # three workers at once: three connections
                Record.objects.using(alias).create(name="executor", value=i)

            for future in [executor.submit(write, i) for i in range(3)]:
                future.result(10)
            for result in [tm.write_record.enqueue(alias, "task", i) for i in range(4)]:
                assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL
            assert server_connection_count(alias) >= 4  # kept, per CONN_MAX_AGE

            assert registry.release_connections(timeout=10) is True
            wait_for(lambda: server_connection_count(alias) == 0, "sessions to end")

            # Both pools still work, on new workers.
            executor.submit(write_one, alias, "executor-after").result(10)
            after = tm.write_record.enqueue(alias, "task-after")
            assert finished(after).status == tm.TaskResultStatus.SUCCESSFUL
            assert server_connection_count(alias) >= 1
        finally:
            executor.shutdown()
            reset_pools()
    rows = Record.objects.using(alias)
    assert rows.filter(name__in=["executor-after", "task-after"]).count() == 2
    wait_for(lambda: server_connection_count(alias) == 0, "sessions to end")


def write_one(alias: str, name: str) -> None:
    Record.objects.using(alias).create(name=name)


def test_busy_worker_releases_once_its_work_is_done(server_alias):
    alias = server_alias
    with database_settings(alias, CONN_MAX_AGE=600):
        executor = ThreadPoolExecutor(max_workers=1)
        try:
            started, gate = threading.Event(), threading.Event()

            def busy():
                Record.objects.using(alias).count()  # holds a connection
                started.set()
                gate.wait(10)

            running = executor.submit(busy)
            queued = executor.submit(write_one, alias, "queued")
            started.wait(10)
            # Still busy when the wait ends: reported, and nothing is lost.
            assert registry.release_connections(timeout=0.05) is False
            gate.set()
            running.result(10)
            queued.result(10)  # ran on a new worker
            assert registry.release_connections(timeout=10) is True
            wait_for(lambda: server_connection_count(alias) == 0, "sessions to end")
        finally:
            gate.set()
            executor.shutdown()


class MixinSecondRunner(DjangoDiscoverRunner, ReleaseConnectionsMixin):
    pass


class MixinFirstRunner(ReleaseConnectionsMixin, DjangoDiscoverRunner):
    pass


class SubclassOfMixinSecondRunner(MixinSecondRunner):
    def teardown_databases(self, old_config, **kwargs):
        super().teardown_databases(old_config, **kwargs)


@pytest.mark.parametrize(
    "runner", [MixinFirstRunner, MixinSecondRunner, SubclassOfMixinSecondRunner]
)
def test_the_runner_mixin_releases_before_or_after_discover_runner(runner):
    # Before: with the mixin second, Django's teardown_databases shadowed it
    # and the workers kept their connections.
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        worker = executor.submit(threading.current_thread).result(10)
        runner().teardown_databases(old_config=[])  # no database to destroy
        worker.join(10)
        assert not worker.is_alive()
        assert executor.submit(lambda: 1).result(10) == 1  # a new worker
    finally:
        executor.shutdown()
