"""One shape for every worker thread django_thread starts.

The executor's workers and the Tasks backend's workers wait for different
things (a FIFO queue filled by ``submit()``; heaps ordered by priority and
``run_after``), so each keeps its own loop. Everything around the loop is
the same, and lives here:

- the thread is a daemon, so that an idle worker never holds the process
  open, and it is tracked by :mod:`django_thread.registry`, whose exit hook
  joins it once its pool has drained, even when the pool itself was shut
  down without waiting or garbage collected;
- a loop that raises is logged as a crash, never silently lost;
- the thread runs inside :func:`~django_thread.thread_connections.owned_thread`:
  whatever ends the loop, the worker's connections are closed, in the
  worker, since no other thread can close them; until then they are
  recorded for :mod:`django_thread.forking`, and kept across units when the pool
  asked for persistent connections.

What ends a loop is the loop's business (see each loop's exit conditions):
its pool shutting down, its pool collected, interpreter exit, or its pool
having moved on to a new generation of workers after a fork or a
:func:`~django_thread.registry.release_connections`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django_thread import registry
from django_thread.thread_connections import create_connection_wrappers, owned_thread


def start_worker(
    name: str,
    loop: Callable[..., object],
    args: tuple[Any, ...],
    crash_logger: logging.Logger,
    persistent_connections: bool | None = None,
    track: bool = True,
) -> threading.Thread:
    """Start a daemon worker thread running ``loop(*args)``.

    ``persistent_connections``: see
    :func:`~django_thread.thread_connections.owned_thread`. ``track=False``
    leaves the thread out of the registry's unbounded join at exit: its
    owner joins it with a timeout (a durable task cut off at exit is left
    for another process, see :mod:`django_thread.tasks.durable_engine`).
    """
    thread = threading.Thread(
        name=name,
        target=_run_worker,
        args=(loop, args, crash_logger, persistent_connections),
        daemon=True,
    )
    thread.start()
    if track:
        registry.track_worker(thread)
    return thread


def _run_worker(
    loop: Callable[..., object],
    args: tuple[Any, ...],
    crash_logger: logging.Logger,
    persistent_connections: bool | None,
) -> None:
    with owned_thread(persistent_connections):
        try:
            create_connection_wrappers()
            loop(*args)
        except BaseException:
            crash_logger.critical(
                "Exception in worker %s",
                threading.current_thread().name,
                exc_info=True,
            )
