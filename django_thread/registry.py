"""The live executors, so that interpreter exit can shut them down cleanly.

The standard library joins its pool's workers at exit through a private
``threading`` hook. django_thread's workers are daemon threads (an idle
worker must not block exit), so the app registers :func:`shutdown_all` with
``atexit`` instead: every executor still alive drains its queue, or cancels
it (``DJANGO_THREAD_CANCEL_AT_EXIT``), and its workers close their
connections before the process goes away.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_thread.executor import ThreadPoolExecutor

logger = logging.getLogger("django_thread")

_live: weakref.WeakSet[ThreadPoolExecutor] = weakref.WeakSet()
_lock = threading.Lock()
_exiting = threading.Event()
_hook_installed = False


def register(executor: ThreadPoolExecutor) -> None:
    with _lock:
        _live.add(executor)


def unregister(executor: ThreadPoolExecutor) -> None:
    with _lock:
        _live.discard(executor)


def live_executors() -> list[ThreadPoolExecutor]:
    with _lock:
        return list(_live)


def exiting() -> bool:
    """True once the interpreter has started shutting executors down."""
    return _exiting.is_set()


def shutdown_all() -> None:
    """Shut every live executor down; registered with ``atexit``."""
    from django_thread.conf import settings

    _exiting.set()
    cancel = settings.DJANGO_THREAD_CANCEL_AT_EXIT
    for executor in live_executors():
        try:
            executor.shutdown(wait=True, cancel_futures=cancel)
        except Exception:
            logger.exception("Shutting down %r at exit failed", executor)


def install_exit_hook() -> None:
    """Called from ``AppConfig.ready()``; idempotent."""
    global _hook_installed
    with _lock:
        if not _hook_installed:
            atexit.register(shutdown_all)
            _hook_installed = True
