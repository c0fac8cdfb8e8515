"""Shutting a pool down: drained or cancelled, and replaced when TASKS changes."""

from __future__ import annotations

import pytest

from django_thread import registry
from django_thread.tasks.pools import existing_pool
from tests.helpers import (
    database_settings,
    wait_for,
)
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished, status_of

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


def test_changing_tasks_setting_resets_the_pool(configure):
    configure(WORKERS=1)
    old = finished(tm.add.enqueue(1, 1))
    old_pool = existing_pool("default")
    configure(WORKERS=2)
    assert existing_pool("default") is None
    with pytest.raises(tm.TaskResultDoesNotExist):
        old.refresh()
    finished(tm.add.enqueue(1, 1))
    assert existing_pool("default") is not old_pool
    assert existing_pool("default").options.workers == 2
    assert old_pool not in registry.live_owners()


def test_shutdown_drains_ready_tasks_and_closes_connections(
    configure, gate, opened_connections
):
    configure(WORKERS=1)
    with database_settings("default", CONN_MAX_AGE=600):
        held = gate()
        blocker = tm.hold.enqueue(held)
        wait_for(lambda: status_of(blocker) == tm.TaskResultStatus.RUNNING, "RUNNING")
        queued = [tm.write_record.enqueue("default", "drained", i) for i in range(3)]
        pool = existing_pool("default")
        tm.GATES[held].set()
        pool.shutdown(wait=True)  # what django_thread.registry does at exit
        assert [status_of(r) for r in queued] == [tm.TaskResultStatus.SUCCESSFUL] * 3
        assert opened_connections.still_open() == 0


def test_shutdown_can_cancel_waiting_tasks(configure, gate):
    configure(WORKERS=1)
    held = gate()
    blocker = tm.hold.enqueue(held)
    wait_for(lambda: status_of(blocker) == tm.TaskResultStatus.RUNNING, "RUNNING")
    queued = tm.add.enqueue(1, 1)
    pool = existing_pool("default")
    tm.GATES[held].set()
    pool.shutdown(wait=True, cancel_futures=True)
    assert status_of(blocker) == tm.TaskResultStatus.SUCCESSFUL
    assert status_of(queued) == tm.TaskResultStatus.READY  # never ran
