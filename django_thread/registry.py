"""Every live django_thread object that owns threads, for what happens to a process.

Three kinds of object own threads: a running :class:`~django_thread.Thread`
owns itself, a :class:`~django_thread.ThreadPoolExecutor` and a Tasks backend
pool own their workers. Three things happen to a whole process and must
reach each of them, wherever it was created:

- **Interpreter exit.** Long-running threads are asked to stop and joined,
  up to ``DJANGO_THREAD_STOP_TIMEOUT`` seconds in all; a thread still running
  then is logged and left. Then every pool drains its queued work (or cancels
  it, ``DJANGO_THREAD_CANCEL_AT_EXIT``), and every worker thread is joined,
  so that each closes its connections. Workers are daemon threads (an idle
  worker must not hold the process open), so this runs where the standard
  library runs its own pool's exit: before ``threading`` joins non-daemon
  threads (see ``internals.run_before_threads_join``), since a non-daemon
  ``Thread`` would otherwise keep the process waiting forever for an exit
  hook that only runs after it.
- **fork().** The child has only the forking thread. Each pool starts afresh
  there (new workers for new work); work queued or running at the fork is
  the parent's, which runs it and completes its futures; the child drops
  its copies without completing them (they stay pending there).
- **Releasing connections** (:func:`release_connections`), for test runners
  that destroy databases while pools are still alive: the workers exit, the
  pools stay usable.

**The rule for code that runs in a forked child** (``_fork_child``, every
``_after_fork_in_child``, every module's :func:`new_lock_in_forked_child`
hook, :mod:`django_thread.forking`): it never
acquires a lock that another thread may have held at the fork. That thread
does not exist in the child, so such a lock is never released there, and
the child hangs, with its parent waiting for it. Such locks are everywhere:
a future's condition (``done()``, ``set_exception()``, ``cancel()``), a
queue's mutex, a ``Semaphore`` or ``Event``, a pool's or this module's lock,
Django's signal locks, a driver's connection mutex, logging's handlers and
the streams under them. So the child's hooks only assign (and release the
locks that the forking thread itself took before the fork, see
:func:`django_thread.forking.hold_units_locks`): each lock, queue
and semaphore a thread of the parent could have used is *replaced* by a new
one, never acquired, released or waited on; the parent's futures and tasks
are dropped, never completed; drivers are not called to close anything; and
nothing is logged (a failure is kept and logged later, when the child
starts its first worker or exits). This is the standard library's own
story: its thread pool's only at-fork code re-creates
``_global_shutdown_lock`` in the child.

Which classes are managed, and how, is declared by the AppConfig
(:mod:`django_thread.apps`) through :func:`manage`: "stopped" classes are
threads (``stop()``, ``join()``), "drained" classes are pools (``shutdown()``
and the private hooks named in :class:`WorkerPool`). They are named by dotted path
and resolved only once their module is imported: a class whose module was
never imported has no instances, and the Tasks backend's module cannot even
be imported without the Tasks framework.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

from django_thread import forking, internals

#: The two functions a project may call; the rest serves the AppConfig and
#: the pools.
__all__ = ["release_connections", "shutdown_all"]

logger = logging.getLogger("django_thread")


class PendingWork(NamedTuple):
    """A pool's unfinished work, as the exit report counts it."""

    pool: str  #: how the log names the pool
    running: int
    queued: int  #: waiting, will run at exit unless cancelled
    deferred: int = 0  #: tasks not due yet: exit drops them

    def __str__(self) -> str:
        deferred = f", {self.deferred} deferred" if self.deferred else ""
        return f"{self.pool}: {self.running} running, {self.queued} queued{deferred}"


class WorkerPool(Protocol):
    """What the registry asks of a "drained" class (an executor, a task pool)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``Executor.shutdown``: queued work runs unless cancelled."""

    def _pending_work(self) -> PendingWork:
        """What is running and waiting now; a snapshot, for the exit report."""

    def _after_fork_in_child(self) -> None:
        """Start afresh in a forked child; never run or touch the parent's work."""

    def _retire_workers(self) -> list[threading.Thread]:
        """Make every current worker exit once idle; return them to join."""


_stopped_paths: tuple[str, ...] = ()
_drained_paths: tuple[str, ...] = ()
_owners: weakref.WeakSet[Any] = weakref.WeakSet()
#: Worker threads, tracked apart from their pools: exit joins the workers of
#: a pool that was garbage collected, or shut down without waiting, too.
_workers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_lock = threading.Lock()
_exiting = threading.Event()
_hooks_installed = False


def manage(*, stopped: Iterable[str], drained: Iterable[str]) -> None:
    """Declare the managed classes; called from ``AppConfig.ready()``."""
    global _stopped_paths, _drained_paths
    _stopped_paths = tuple(stopped)
    _drained_paths = tuple(drained)


#: Functions that re-create module-level state in a forked child.
_module_resets: list[Callable[[], None]] = []


def new_lock_in_forked_child(namespace: dict[str, Any], name: str) -> None:
    """Have ``namespace[name]``, a module's lock, be a new Lock in every forked child.

    A module-level lock may be held by a parent thread at the fork whether or
    not any of the module's objects exist, so it is replaced before the
    pools' own hooks run (see the rule above). A module calls this once, at
    import, with its ``globals()``; its functions read the name at each use.
    """

    def reset() -> None:
        namespace[name] = threading.Lock()

    _module_resets.append(reset)


def register(owner: Any) -> None:
    with _lock:
        _owners.add(owner)


def unregister(owner: Any) -> None:
    with _lock:
        _owners.discard(owner)


def track_worker(thread: threading.Thread) -> None:
    with _lock:
        _workers.add(thread)
    if _fork_failures:
        _log_fork_failures()


def live_owners() -> list[Any]:
    with _lock:
        return list(_owners)


def exiting() -> bool:
    """True once exit has stopped the threads and started draining the pools."""
    return _exiting.is_set()


def _resolve(paths: tuple[str, ...]) -> list[type]:
    classes = []
    for path in paths:
        module_name, _, name = path.rpartition(".")
        module = sys.modules.get(module_name)
        if module is not None:
            classes.append(getattr(module, name))
    return classes


def _by_class(paths: tuple[str, ...]) -> list[list[Any]]:
    """Live owners grouped by managed class, in the declared order."""
    owners = live_owners()
    groups = []
    for cls in _resolve(paths):
        groups.append([owner for owner in owners if isinstance(owner, cls)])
        owners = [owner for owner in owners if not isinstance(owner, cls)]
    return groups


def _threads_to_stop() -> list[Any]:
    """Live "stopped" threads that exit asks to stop.

    A thread whose class sets ``stop_at_exit = False`` (``Timer``: a
    pending timer fires at exit, as ``threading.Timer`` does) is left alone.
    """
    current = threading.current_thread()
    return [
        thread
        for group in _by_class(_stopped_paths)
        for thread in group
        if thread.stop_at_exit and thread is not current and thread.is_alive()
    ]


def stop_threads(timeout: float) -> None:
    """Ask every live "stopped" thread to stop; join them, ``timeout`` in all."""
    threads = _threads_to_stop()
    for thread in threads:
        try:
            thread.stop()
        except Exception:
            logger.exception("Asking %s to stop at exit failed", thread.name)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning(
                "Thread %s did not stop within DJANGO_THREAD_STOP_TIMEOUT "
                "(%s s); leaving it running",
                thread.name,
                timeout,
            )


def report_pending_work(stop_timeout: float, cancel: bool) -> None:
    """Say, in one WARNING, what exit is about to wait for, and for how long.

    If the process is killed while it waits (SIGKILL, an OOM kill, a
    server's graceful timeout shorter than the work), this line is the
    record of what was lost. What then did not finish is logged after the
    wait: each Thread that did not stop, jobs and tasks that were dropped.
    """
    threads = _threads_to_stop()
    pending = []
    for group in _by_class(_drained_paths):
        for pool in group:
            work = pool._pending_work()
            if work.running or work.queued or work.deferred:
                pending.append(work)
    if not threads and not pending:
        return
    parts = [str(work) for work in pending]
    waits = []
    if threads:
        parts.append(f"{len(threads)} Thread(s) to stop")
        waits.append(
            f"up to {stop_timeout} s for the Threads to stop "
            "(DJANGO_THREAD_STOP_TIMEOUT)"
        )
    if pending:
        what = "running work (queued work is cancelled)" if cancel else "work"
        waits.append(f"for the pools' {what}, with no time limit")
    dropped = " Deferred tasks are dropped." if any(w.deferred for w in pending) else ""
    logger.warning(
        "Exiting with unfinished work: %s. Waiting %s.%s",
        "; ".join(parts),
        ", then ".join(waits),
        dropped,
    )


def shutdown_all() -> None:
    """Interpreter exit: stop the threads, then drain every pool, in order.

    Nothing here may raise before the pools are drained: their workers are
    daemon threads, so the work still queued would be lost.
    """
    from django_thread.checks import read_safely

    stop_timeout = read_safely("DJANGO_THREAD_STOP_TIMEOUT")
    cancel = read_safely("DJANGO_THREAD_CANCEL_AT_EXIT")
    try:
        report_pending_work(stop_timeout, cancel)
    except Exception:
        logger.exception("Counting the work pending at exit failed")
    try:
        stop_threads(stop_timeout)
    except Exception:
        logger.exception("Stopping threads at exit failed")
    # Stopping threads could still hand work to pools; from here on, no one can.
    _exiting.set()
    for group in _by_class(_drained_paths):
        for pool in group:
            try:
                pool.shutdown(wait=True, cancel_futures=cancel)
            except Exception:
                logger.exception("Shutting down %r at exit failed", pool)
    with _lock:
        workers = list(_workers)
    for worker in workers:
        # Workers of pools no longer registered: they still run queued work.
        if worker.is_alive() and worker is not threading.current_thread():
            worker.join()


def release_connections(timeout: float = 10.0) -> bool:
    """Make every worker of every live pool exit, closing its connections.

    For test runners and the pytest plugin, before test databases are
    destroyed (PostgreSQL refuses to drop a database that sessions are
    still using): each executor and Tasks backend pool retires its current
    workers. Idle ones exit at once, busy ones after the work they are
    running; each closes its connections as it exits. The pools stay
    usable: work submitted later, or queued now, starts new workers.
    Workers of pools already shut down are waited for as well. Long-running
    ``Thread`` objects run your code and are not touched.

    Returns True once every such worker has exited, or False after
    ``timeout`` seconds with some still running (each is logged).
    """
    retired: list[threading.Thread] = []
    for group in _by_class(_drained_paths):
        for pool in group:
            retired += pool._retire_workers()
    with _lock:
        retired += [worker for worker in _workers if worker not in retired]
    deadline = time.monotonic() + timeout
    released = True
    for worker in retired:
        if worker is threading.current_thread():
            continue
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            released = False
            logger.warning(
                "Worker %s is still running after %s s; its connections stay "
                "open until its work ends",
                worker.name,
                timeout,
            )
    return released


#: Pools and module resets that failed in a forked child, with the error
#: (the pool's repr, the reset's dotted name): logged only
#: once the at-fork hook is over (see the rule above).
_fork_failures: list[tuple[str, BaseException]] = []


def _log_fork_failures() -> None:
    while _fork_failures:
        what, error = _fork_failures.pop()
        logger.error("Resetting %s in a forked child failed", what, exc_info=error)


def _fork_prepare() -> None:
    _lock.acquire()
    forking.hold_units_locks()


def _fork_parent() -> None:
    forking.release_units_locks()
    _lock.release()


def _fork_child() -> None:
    """Replace the registry's lock and event and the modules' locks; new pools.

    Follows the rule in this module's docstring: nothing here may lock.
    """
    global _lock, _exiting
    forking.release_units_locks()  # taken by this thread before the fork
    _lock = threading.Lock()
    was_exiting, _exiting = _exiting.is_set(), threading.Event()
    if was_exiting:
        _exiting.set()  # the new event: no other thread knows it
    forking.forget_inherited_connections()
    # Threads of the parent do not exist here (but the forking one does):
    # forget them and the workers.
    current = threading.current_thread()
    for group in _by_class(_stopped_paths):
        for thread in group:
            if thread is not current:
                _owners.discard(thread)
    _workers.clear()
    for reset in _module_resets:
        try:
            reset()
        except Exception as error:
            _fork_failures.append((f"{reset.__module__}.{reset.__qualname__}", error))
    for group in _by_class(_drained_paths):
        for pool in group:
            try:
                pool._after_fork_in_child()
            except Exception as error:
                _fork_failures.append((repr(pool), error))


def install_hooks() -> None:
    """The exit and fork hooks; called from ``AppConfig.ready()``, idempotent."""
    global _hooks_installed
    with _lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    internals.run_before_threads_join(shutdown_all)
    if hasattr(os, "register_at_fork"):  # not on Windows
        os.register_at_fork(
            before=_fork_prepare,
            after_in_parent=_fork_parent,
            after_in_child=_fork_child,
        )
