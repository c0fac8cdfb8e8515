"""The demo's three columns: the same pool run three ways, and its connections."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections
from django.db.backends.signals import connection_created

import django_thread

#: How long a batch waits for every worker to hold one of its jobs.
BARRIER_TIMEOUT = 10.0

Job = Callable[..., Any]


def as_written(job: Job) -> Job:
    return job


def with_close_old_connections(job: Job) -> Job:
    """The usual hand-written fix: Django's per-request cleanup around each job."""

    def run(*args: Any) -> Any:
        close_old_connections()
        try:
            return job(*args)
        finally:
            close_old_connections()

    return run


@dataclass(frozen=True)
class Column:
    key: str
    executor_class: type[futures.ThreadPoolExecutor]
    wrap: Callable[[Job], Job]
    description: str


COLUMNS = [
    Column(
        "stdlib",
        futures.ThreadPoolExecutor,
        as_written,
        "concurrent.futures.ThreadPoolExecutor; jobs run as written.",
    ),
    Column(
        "recipe",
        futures.ThreadPoolExecutor,
        with_close_old_connections,
        "the same pool, with Django's close_old_connections() called before "
        "and after each job: the usual hand-written fix.",
    ),
    Column(
        "django_thread",
        django_thread.ThreadPoolExecutor,
        as_written,
        "django_thread.ThreadPoolExecutor; jobs run as written.",
    ),
]


def at_barrier(barrier: threading.Barrier, job: Job, *args: Any) -> Any:
    barrier.wait()
    return job(*args)


class WorkerConnections:
    """The connections Django opened in other threads, via a public signal.

    Holding the wrappers keeps them alive, so an open one is a connection that
    nobody closed, not one the garbage collector has not reached yet. A
    wrapper that reconnects is recorded once.
    """

    def __init__(self) -> None:
        self.wrappers: dict[int, Any] = {}
        self._main = threading.get_ident()
        self._lock = threading.Lock()

    def record(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if threading.get_ident() != self._main:
            with self._lock:
                self.wrappers[id(connection)] = connection

    def still_open(self) -> list[Any]:
        # A wrapper closed inside an atomic block keeps its (closed) driver
        # connection and says so in closed_in_transaction.
        return [
            w
            for w in self.wrappers.values()
            if w.connection is not None and not w.closed_in_transaction
        ]


class Pool:
    """One column's executor, and the connections its workers open."""

    def __init__(self, column: Column, workers: int) -> None:
        self.column = column
        self.workers = workers
        self.connections = WorkerConnections()
        connection_created.connect(self.connections.record, weak=False)
        self.executor = column.executor_class(max_workers=workers)

    def submit(self, job: Job, *args: Any) -> futures.Future[Any]:
        return self.executor.submit(self.column.wrap(job), *args)

    def batch(self, job: Job, *args: Any) -> list[futures.Future[Any]]:
        """One job per worker: each waits at a barrier until all are running."""
        barrier = threading.Barrier(self.workers, timeout=BARRIER_TIMEOUT)
        submitted = [
            self.submit(at_barrier, barrier, job, *args) for _ in range(self.workers)
        ]
        futures.wait(submitted)
        return submitted

    def shutdown(self) -> list[Any]:
        """Shut the pool down; return the worker connections still open."""
        self.executor.shutdown(wait=True)
        connection_created.disconnect(self.connections.record)
        return self.connections.still_open()


def close_all(wrappers: list[Any]) -> None:
    """Close what a pool left open, rolling back any transaction in it."""
    for wrapper in wrappers:
        wrapper.connection.close()
