"""Connections: workers close theirs and survive the server killing them."""

from __future__ import annotations

import pytest

from django_thread.tasks import reset_pools
from testproject.jobs.models import Record
from tests.helpers import (
    database_settings,
    kill_server_connections,
    server_connection_count,
    wait_for,
)
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


def test_writing_and_failing_tasks_leave_no_connection_open(
    alias, configure, opened_connections
):
    configure(WORKERS=3)
    writes = [tm.write_record.enqueue(alias, "row", i) for i in range(12)]
    failures = [tm.query_missing_table.enqueue(alias) for _ in range(3)]
    async_writes = [tm.async_write_record.enqueue(alias, "async-row") for _ in range(3)]
    for result in writes + async_writes:
        assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL
    for result in failures:
        assert finished(result).status == tm.TaskResultStatus.FAILED
    assert Record.objects.using(alias).filter(name="row").count() == 12
    assert Record.objects.using(alias).filter(name="async-row").count() == 3
    assert opened_connections.opened(alias) >= 1
    assert opened_connections.still_open(alias) == 0
    if alias != "default":
        wait_for(
            lambda: server_connection_count(alias) == 0, "server connections to end"
        )


def test_tasks_survive_the_server_killing_worker_connections(server_alias, configure):
    alias = server_alias
    with database_settings(alias, CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True):
        configure(WORKERS=2)
        for result in [tm.write_record.enqueue(alias, "before", i) for i in range(6)]:
            assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL
        assert server_connection_count(alias) >= 1  # kept, per CONN_MAX_AGE
        assert kill_server_connections(alias) >= 1
        after = [tm.write_record.enqueue(alias, "after", i) for i in range(8)]
        for result in after:
            assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL, (
                result.errors
            )
        assert Record.objects.using(alias).filter(name="after").count() == 8
        reset_pools()  # shutting the pool down closes the workers' connections
        wait_for(lambda: server_connection_count(alias) == 0, "workers to disconnect")


@pytest.mark.parametrize(
    ("option", "kept"), [(True, True), (None, False)], ids=["option-on", "default"]
)
def test_tasks_backend_option_keeps_worker_connections(
    alias, configure, opened_connections, option, kept
):
    tasks = 6
    with database_settings(alias, CONN_MAX_AGE=0):
        configure(WORKERS=1, PERSISTENT_CONNECTIONS=option)
        # The first task may open more than one connection: on MariaDB,
        # Django's first use of a wrapper reads the server version on a
        # temporary one. Count from the second task on.
        first = tm.write_record.enqueue(alias, "row", -1)
        assert finished(first).status == tm.TaskResultStatus.SUCCESSFUL
        opened_by_first = opened_connections.opened(alias)
        for i in range(tasks):
            result = tm.write_record.enqueue(alias, "row", i)
            assert finished(result).status == tm.TaskResultStatus.SUCCESSFUL
        assert opened_connections.opened(alias) - opened_by_first == (
            0 if kept else tasks
        )
        # One wrapper per worker (the MariaDB one was recorded twice).
        open_wrappers = {
            id(wrapper)
            for wrapper in opened_connections.wrappers
            if wrapper.alias == alias and wrapper.connection is not None
        }
        assert len(open_wrappers) == (1 if kept else 0)
