"""The executor's futures: a failure nobody looked at is logged, not lost.

``executor.submit(job)`` with the future thrown away is the most common
way background work fails unseen: the stdlib's future keeps the exception
until it is garbage collected, then drops it. asyncio logs "Task exception
was never retrieved" for the same case; so do we, once per future, at
ERROR with the traceback, on the ``django_thread`` logger
(``DJANGO_THREAD_LOG_UNRETRIEVED_EXCEPTIONS``).

Retrieved means that ``result()`` or ``exception()`` handed the failure
over, or that a done callback was added (the callback is given the future;
looking is its job, as ``asyncio.wrap_future``'s does). ``wait()`` and
``as_completed()`` only say which futures are done, so they retrieve
nothing. ``Executor.map()`` calls ``result()`` on each future it reaches:
the failure it raises is retrieved, the failures of later calls that the
iteration never reached are logged. A cancelled future has no exception.

The failure is noticed in ``__del__``, which may run on any thread at any
moment: inside a logging handler that holds its own lock, or in a forked
child where another thread of the parent held one. So ``__del__`` takes no
lock and calls nothing that might: it only puts the failure on a
``queue.SimpleQueue``, whose ``put()`` is documented as safe in ``__del__``.
:func:`log_unretrieved` logs what is there, from ordinary code: the
executor's worker right after each call (where a discarded future usually
dies), ``shutdown()``, and interpreter exit, which also logs the failures
of futures still alive then, since no one can retrieve them any more.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import weakref
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

logger = logging.getLogger("django_thread")

_T = TypeVar("_T")

#: (exception, what failed) of futures collected with their failure unseen.
_unretrieved: queue.SimpleQueue[tuple[BaseException, str]] = queue.SimpleQueue()
#: Futures that failed, for exit: one still alive then (a module global, say)
#: would otherwise be collected after the last chance to log.
_failed: weakref.WeakSet[Future[Any]] = weakref.WeakSet()
_exit_hook_installed = False


class Future(futures.Future[_T]):
    """A ``concurrent.futures.Future`` that logs an exception nobody retrieved.

    Overrides only record that the failure was handed over; every behaviour
    is the stdlib's.
    """

    #: Set when the future fails, if the failure is to be logged when unseen.
    _failure: BaseException | None = None
    #: The process the failure happened in: a forked child's copy stays quiet.
    _failure_pid = 0
    _retrieved = False
    #: What failed, for the log line; the executor names its call.
    failed_call = "a call submitted to a django_thread ThreadPoolExecutor"

    def result(self, timeout: float | None = None) -> _T:
        try:
            return super().result(timeout)
        except BaseException as exc:
            # A wait that timed out hands nothing over.
            if not isinstance(exc, futures.TimeoutError) or self.done():
                self._retrieved = True
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        exception = super().exception(timeout)
        self._retrieved = True
        return exception

    def add_done_callback(self, fn: Callable[[futures.Future[_T]], object]) -> None:
        self._retrieved = True
        super().add_done_callback(fn)

    def set_exception(self, exception: BaseException | None) -> None:
        super().set_exception(exception)
        from django_thread.conf import settings

        if exception is not None and settings.DJANGO_THREAD_LOG_UNRETRIEVED_EXCEPTIONS:
            self._failure_pid = os.getpid()
            self._failure = exception
            _failed.add(self)
            _install_exit_hook()

    def _unseen_failure(self, pid: int) -> BaseException | None:
        if self._failure is None or self._retrieved or self._failure_pid != pid:
            return None
        return self._failure

    def __del__(
        self, _put: Callable[..., None] = _unretrieved.put, _pid: Any = os.getpid
    ) -> None:
        # No lock here, nothing that takes one (see the module docstring).
        if self._failure is None:
            return  # the usual case, kept cheap
        failure = self._unseen_failure(_pid())
        if failure is not None:
            _put((failure, self.failed_call))


def log_unretrieved() -> None:
    """Log every failure found unretrieved since the last call."""
    if _unretrieved.empty():
        return  # the usual case, cheap: it runs after every executor call
    while True:
        try:
            exception, failed_call = _unretrieved.get_nowait()
        except queue.Empty:
            return
        _log(exception, failed_call)


def _log_unretrieved_at_exit() -> None:
    """Log the collected ones, then those still alive: no one can look now."""
    log_unretrieved()
    pid = os.getpid()
    for future in list(_failed):
        failure = future._unseen_failure(pid)
        if failure is not None:
            future._retrieved = True  # logged once: not again when collected
            _log(failure, future.failed_call)


def _log(exception: BaseException, failed_call: str) -> None:
    logger.error(
        "Exception in %s was never retrieved: nothing called result() or "
        "exception() on its future, nor added a done callback",
        failed_call,
        exc_info=(type(exception), exception, exception.__traceback__),
    )


def _install_exit_hook() -> None:
    """Log the last failures at exit, once a failure may need it.

    No lock: this can run in a forked child, and registering twice in a
    race only makes exit look at an empty queue twice.
    """
    global _exit_hook_installed
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_log_unretrieved_at_exit)
