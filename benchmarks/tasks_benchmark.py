"""Enqueue-to-result throughput of ThreadPoolBackend, against its references.

Each side runs the same module-level function on the same number of
workers, in interleaved rounds of one batch: the time from the first enqueue
(or submit) until every result is final, as tasks per second.

``executor``
    ``django_thread.ThreadPoolExecutor`` submitting the bare function:
    what the backend adds on top of its units of work.
``backend`` / ``backend persistent``
    ``ThreadPoolBackend``, with its defaults and with
    ``OPTIONS["PERSISTENT_CONNECTIONS"]`` (n/a where that option is unknown).
``django-tasks-local``
    its ``ThreadPoolBackend`` (Django >= 6 only), when installed. It does no
    connection handling at all: its workers are bare stdlib threads.

Both backends are waited for the same way, through the public
``TaskResult.refresh()``, oldest result first, sleeping between polls of a
result that is not final yet (see :func:`wait_for`).
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable
from typing import Any

from benchmarks.jobs import query_task, trivial_task
from benchmarks.timing import Stat, interleaved, ratio

#: Names the backends have in ``TASKS`` (see ``benchmarks.configuration``).
BACKENDS = {
    "backend": "threads",
    "backend persistent": "persistent",
    "django-tasks-local": "local",
}


def task_backends() -> Any:
    try:
        from django.tasks import task_backends
    except ImportError:  # Django 5.2 and the backport
        from django_tasks import task_backends  # type: ignore[no-redef]
    return task_backends


def make_task(fn: Callable[..., Any]) -> Any:
    try:
        from django.tasks import task
    except ImportError:
        from django_tasks import task  # type: ignore[no-redef]
    return task(fn)


#: Between two polls of an unfinished result, the wait sleeps this share of
#: the time the batch has taken so far, and at least ``MIN_POLL_SLEEP``.
POLL_SLEEP_SHARE = 0.01
MIN_POLL_SLEEP = 0.0005


def wait_for(results: list[Any], start: float) -> None:
    """Return once every result is final; fail if one did not succeed.

    A poll costs the main thread a ``refresh()`` (several µs) and takes the
    interpreter from the workers, so a fixed short sleep made polls, and
    their cost, grow with the batch's duration: the slower side paid for
    more of them, which widened the gap it measured (1000 one-query tasks:
    about 410 polls of an unfinished result on our backend, 280 on
    django-tasks-local). Sleeping 1% of the elapsed time makes it about 110
    on each, and keeps the end time within about 1% of the batch.
    """
    pending = collections.deque(results)
    while pending:
        pending[0].refresh()
        if pending[0].is_finished:
            failed = pending.popleft()
            if failed.status != "SUCCESSFUL":
                raise SystemExit(f"a task failed: {failed.errors}")
        else:
            elapsed = time.perf_counter() - start
            time.sleep(max(MIN_POLL_SLEEP, elapsed * POLL_SLEEP_SHARE))


def backend_batch(task: Any, alias: str, arguments: list[tuple]) -> float:
    """Seconds per task, from the first enqueue until every result is final."""
    bound = task.using(backend=alias)
    start = time.perf_counter()
    wait_for([bound.enqueue(*args) for args in arguments], start)
    return (time.perf_counter() - start) / len(arguments)


def executor_batch(executor: Any, fn: Callable[..., Any], arguments: list) -> float:
    start = time.perf_counter()
    submitted = [executor.submit(fn, *args) for args in arguments]
    for future in submitted:
        future.result()
    return (time.perf_counter() - start) / len(arguments)


def available_backends() -> dict[str, str]:
    """The configured backends; ours persistent only where its option is known."""
    from django.conf import settings

    found = {side: alias for side, alias in BACKENDS.items() if alias in settings.TASKS}
    # An unknown OPTIONS key is only a check error: the backend would run
    # without the option, so ask its checks rather than try it.
    messages = task_backends()["persistent"].check()
    if any(m.is_serious() and "PERSISTENT_CONNECTIONS" in m.msg for m in messages):
        del found["backend persistent"]
    return found


SIDES = ("executor", *BACKENDS)


def run_tasks(
    database: str, label: str, workers: int, counts: tuple[int, int], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Trivial and one-query tasks on every side; print one table."""
    import django_thread
    from django_thread.tasks import reset_pools

    jobs = {
        "trivial": (trivial_task, [(i,) for i in range(counts[0])]),
        "one query, CONN_MAX_AGE=600": (
            query_task,
            [(database, i) for i in range(counts[1])],
        ),
    }
    backends = available_backends()
    print(f"\nTasks, {label}, {workers} workers: tasks per second (median ±half range)")
    print(
        f"{'tasks':<34}"
        + "".join(f"{side:>20}" for side in SIDES)
        + f"{'backend/executor':>18}{'backend/local':>16}"
    )
    collected = {}
    executor = django_thread.ThreadPoolExecutor(workers)
    try:
        for name, (fn, arguments) in jobs.items():
            task = make_task(fn)
            batches = {"executor": functools.partial(executor_batch, executor, fn)}
            for side, alias in backends.items():
                batches[side] = functools.partial(backend_batch, task, alias)
            for measure in batches.values():  # start workers, open connections
                measure(arguments[: 10 * workers])
            values = interleaved(
                {side: functools.partial(m, arguments) for side, m in batches.items()},
                rounds,
            )
            collected[name] = values
            print_row(f"{len(arguments)} {name}", values)
    finally:
        executor.shutdown()
        reset_pools()  # our task workers close their connections
        if "local" in backends.values():
            task_backends()["local"].close()
    return collected


def print_row(label: str, values: dict[str, list[float]]) -> None:
    cells = [
        Stat.of([1 / v for v in values[side]]).format(digits=0)
        if side in values
        else "n/a"
        for side in SIDES
    ]
    slower = ratio(values, "backend", "executor").format(digits=2)
    faster = (
        ratio(values, "django-tasks-local", "backend").format(digits=2)
        if "django-tasks-local" in values
        else "n/a"
    )
    print(
        f"{label:<34}"
        + "".join(f"{c:>20}" for c in cells)
        + f"{slower:>18}{faster:>16}"
    )
