"""Task signals: sent like Django's backends send them, robust to receivers."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from django_thread.tasks import ThreadPoolBackend
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished, recorded_signals

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


def test_task_signals_are_sent_like_djangos_backends(backend):
    with recorded_signals() as events:
        ok = finished(tm.add.enqueue(1, 1))
        failed = finished(tm.fail.enqueue("no"))
    for result, final in [(ok, "SUCCESSFUL"), (failed, "FAILED")]:
        mine = [event for event in events if event[2] == result.id]
        assert [
            (name, status, in_caller) for name, _, _, status, in_caller in mine
        ] == [
            ("enqueued", "READY", True),
            ("started", "RUNNING", False),
            ("finished", final, False),
        ]
        assert all(sender is ThreadPoolBackend for _, sender, _, _, _ in mine)


def test_failing_signal_receiver_does_not_stop_the_task(backend):
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    tm.task_started.connect(broken)
    try:
        result = finished(tm.add.enqueue(3, 4))
    finally:
        tm.task_started.disconnect(broken)
    assert result.return_value == 7


class ProjectBackend(ThreadPoolBackend):
    """A project's own subclass, as receivers filtering on sender would see it."""


def test_a_subclass_of_the_backend_is_the_sender_of_its_task_signals():
    path = f"{__name__}.{ProjectBackend.__qualname__}"
    with override_settings(
        TASKS={"default": {"BACKEND": path, "QUEUES": ["default"], "OPTIONS": {}}}
    ):
        with recorded_signals() as events:
            result = finished(tm.add.enqueue(2, 2))
    mine = [event for event in events if event[2] == result.id]
    assert [name for name, *_ in mine] == ["enqueued", "started", "finished"]
    assert all(sender is ProjectBackend for _, sender, *_ in mine)
