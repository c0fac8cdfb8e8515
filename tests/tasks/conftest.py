"""Fixtures of the Tasks backend's tests: TASKS pointed at it, gates to hold tasks."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_thread.tasks import ThreadPoolBackend
from tests.tasks import tasks as tm
from tests.tasks.helpers import tasks_setting


@pytest.fixture
def configure() -> Iterator[Callable[..., None]]:
    """Point TASKS["default"] at ThreadPoolBackend with these OPTIONS.

    On the way out every gate opens first, so that resetting the pool never
    waits on a task a failed test left holding.
    """
    with contextlib.ExitStack() as stack:

        def apply(queues: list[str] | None = None, **options: Any) -> None:
            stack.enter_context(
                override_settings(TASKS=tasks_setting(queues, **options))
            )

        yield apply
        for gate in tm.GATES.values():
            gate.set()
    tm.GATES.clear()


@pytest.fixture
def backend(configure: Callable[..., None]) -> ThreadPoolBackend:
    configure()
    return tm.task_backends["default"]


@pytest.fixture
def gate() -> Callable[[], str]:
    counter = iter(range(1_000_000))

    def make() -> str:
        name = f"gate-{next(counter)}"
        tm.GATES[name] = threading.Event()
        return name

    return make
