"""The jobs every pool runs, and the reference pools they are compared with.

Task functions live here, at module level, because the Tasks framework
(and django-tasks-local, which imports each task by its dotted path) only
accept module-level functions.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

Job = Callable[[], object]


def noop() -> None:
    pass


def orm_query(alias: str) -> Job:
    """One ORM query on ``alias``, the cheapest one a real job makes."""

    def job() -> bool:
        from testproject.jobs.models import Record

        return Record.objects.using(alias).filter(value=1).exists()

    return job


def server_wait(alias: str) -> Job:
    """A query that waits 1 ms on the server, like a database on another host."""

    def job() -> None:
        from django.db import connections

        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.001)")
            cursor.fetchone()

    return job


def trivial_task(i: int) -> int:
    return i + 1


def query_task(alias: str, i: int) -> bool:
    from testproject.jobs.models import Record

    return Record.objects.using(alias).filter(value=i).exists()


class StdlibPool(futures.ThreadPoolExecutor):
    """The stdlib pool, closing its workers' connections when it shuts down.

    The stdlib pool itself never closes them (the bug class django-thread
    exists for); the benchmark does, as an application would have to, so
    that one run does not pile up server connections. The initializer only
    collects each worker's connection wrappers: it costs nothing per job.
    """

    def __init__(self, max_workers: int) -> None:
        self._wrappers: list[Any] = []
        super().__init__(max_workers, initializer=self._collect_wrappers)

    def _collect_wrappers(self) -> None:
        from django.db import connections

        self._wrappers.extend(connections[alias] for alias in connections)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=True, cancel_futures=cancel_futures)
        for wrapper in self._wrappers:
            wrapper.inc_thread_sharing()  # its thread is gone; close it here
            wrapper.close()
        self._wrappers.clear()


def recipe(job: Job) -> Job:
    """django-thread 0.0.1's recipe: ``close_old_connections()`` around the job."""
    from django.db import close_old_connections

    def run() -> None:
        close_old_connections()
        try:
            job()
        finally:
            close_old_connections()

    return run


def floor(job: Job) -> Job:
    """The design's floor: Django's two request signals around the job, in the worker.

    Nothing that sends ``request_started`` and ``request_finished`` to
    Django's own receivers can be cheaper.
    """
    from django.core.signals import request_finished, request_started

    def run() -> None:
        request_started.send(sender=StdlibPool)
        try:
            job()
        finally:
            request_finished.send(sender=StdlibPool)

    return run


def keep_floor(job: Job) -> Job:
    """The floor for persistent connections: each worker keeps its connections.

    The :func:`floor`'s two signals, but after the job every connection of
    this worker has its ``close_at`` lifted, so that ``request_finished``
    never closes it for its age: at ``CONN_MAX_AGE = 0`` the plain floor
    reconnects for every job, which is no floor for a pool that keeps its
    connections. Aliases on Django's native pool are left alone, as
    persistent connections leave them. The worker's wrappers are looked up
    once per worker, so lifting costs a few attribute writes per job.
    """
    import threading

    from django.core.signals import request_finished, request_started
    from django.db import connections

    from django_thread.internals import keep_open_until_thread_ends

    worker = threading.local()

    def own_wrappers() -> list[Any]:
        wrappers = getattr(worker, "wrappers", None)
        if wrappers is None:
            wrappers = worker.wrappers = [
                connections[alias]
                for alias in connections
                if not connections[alias].settings_dict["OPTIONS"].get("pool")
            ]
        return wrappers

    def run() -> None:
        request_started.send(sender=StdlibPool)
        try:
            job()
        finally:
            for wrapper in own_wrappers():
                keep_open_until_thread_ends(wrapper)
            request_finished.send(sender=StdlibPool)

    return run


def supports_persistent_connections() -> bool:
    """Whether this django_thread accepts ``persistent_connections=True``."""
    import django_thread

    try:
        executor = django_thread.ThreadPoolExecutor(1, persistent_connections=True)
    except TypeError:
        return False
    executor.shutdown()
    return True


Side = tuple[Callable[[int], futures.Executor], Callable[[Job], Job]]


def sides() -> dict[str, Side | None]:
    """The executor benchmark's pools: a factory and a job wrapper for each.

    The persistent side is None when this django_thread lacks the keyword.
    """
    import django_thread

    def bare(job: Job) -> Job:
        return job

    found: dict[str, Side | None] = {
        "stdlib": (StdlibPool, bare),
        "0.0.1 recipe": (StdlibPool, recipe),
        "floor": (StdlibPool, floor),
        "keep floor": (StdlibPool, keep_floor),
        "ours": (django_thread.ThreadPoolExecutor, bare),
        "ours persistent": None,
    }
    if supports_persistent_connections():
        found["ours persistent"] = (
            lambda workers: django_thread.ThreadPoolExecutor(
                workers, persistent_connections=True
            ),
            bare,
        )
    return found
