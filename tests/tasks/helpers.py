"""What the Tasks backend's tests share: its settings, waiting on results, signals."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tests.helpers import wait_for
from tests.tasks import tasks as tm

BACKEND = "django_thread.tasks.ThreadPoolBackend"


def tasks_setting(queues: list[str] | None = None, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": BACKEND,
            "QUEUES": ["default", "emails"] if queues is None else queues,
            "OPTIONS": options,
        }
    }


def finished(result: Any, timeout: float = 10.0) -> Any:
    """Wait until the result is final; return it refreshed."""

    def done() -> bool:
        result.refresh()
        return result.is_finished

    wait_for(done, f"task {result.task.name} to finish", timeout=timeout)
    return result


def status_of(result: Any) -> str:
    result.refresh()
    return result.status


@contextlib.contextmanager
def recorded_signals() -> Iterator[list[tuple[str, Any, str, str, bool]]]:
    events: list[tuple[str, Any, str, str, bool]] = []
    main = threading.get_ident()

    def receiver_for(name: str) -> Callable[..., None]:
        def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
            events.append(
                (
                    name,
                    sender,
                    task_result.id,
                    task_result.status,
                    threading.get_ident() == main,
                )
            )

        return receiver

    receivers = {
        signal: receiver_for(name)
        for name, signal in [
            ("enqueued", tm.task_enqueued),
            ("started", tm.task_started),
            ("finished", tm.task_finished),
        ]
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    try:
        yield events
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
