"""What the app wires for DURABLE task backends, cheap when there are none.

Kept apart from :mod:`django_thread.tasks`, which cannot be imported without
the Tasks framework: these run in every project, and import it only when
``TASKS`` has a DURABLE backend.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage

logger = logging.getLogger("django_thread")

#: The process whose first request started the workers (None: not yet).
_started_in: int | None = None


def durable_configured() -> bool:
    backends = getattr(settings, "TASKS", None) or {}
    return any(
        isinstance(params, Mapping)
        and isinstance(params.get("OPTIONS"), Mapping)
        and params["OPTIONS"].get("DURABLE") is True
        for params in backends.values()
    )


def start_on_first_request(**kwargs: Any) -> None:
    """``request_started``: the first request (or unit) of a process starts them.

    Durable workers run tasks enqueued by any process, so a process should
    run them without waiting to enqueue one itself; a forked child
    (gunicorn ``--preload``) starts its own on its first request.
    """
    global _started_in
    pid = os.getpid()
    if _started_in == pid:
        return
    _started_in = pid
    if not durable_configured():
        return
    try:
        from django_thread.tasks.durable import start_durable_workers

        start_durable_workers()
    except Exception:
        # Never fail the request: the check framework reports bad settings.
        logger.exception("Starting the DURABLE task workers failed")


def forget_started(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed``: new TASKS, new engines, started again on next request."""
    global _started_in
    if setting == "TASKS":
        _started_in = None


def check_durable_tables(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    if not databases or not durable_configured():
        return []
    from django_thread.tasks.durable_checks import check_durable_tables

    return check_durable_tables(app_configs, databases, **kwargs)
