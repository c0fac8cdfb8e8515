"""Enqueue-to-result throughput of ThreadPoolBackend, against its references.

Run from the repository root::

    python benchmarks/tasks_benchmark.py
    BENCH_DATABASE_URL=postgresql://root@127.0.0.1:5432/test \
        python benchmarks/tasks_benchmark.py

For 2000 trivial tasks and 2000 one-query tasks it times, from the first
enqueue to the last finished result:

- ``ThreadPoolBackend`` (``BENCH_WORKERS`` workers, default 4);
- Django's ``ImmediateBackend`` (runs each task in the caller);
- ``django_thread.ThreadPoolExecutor`` submitting the bare function;
- ``concurrent.futures.ThreadPoolExecutor`` submitting the bare function
  (which never closes its threads' connections: the bug class this package
  exists for, here only as a speed reference).

and prints each as tasks per second and as a ratio to ThreadPoolBackend.
The database is ``BENCH_DATABASE_URL`` (sqlite, postgresql or mysql URL),
by default a temporary SQLite file; ``BENCH_CONN_MAX_AGE`` sets
``CONN_MAX_AGE`` (default 0, Django's default).
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N = int(os.environ.get("BENCH_TASKS", "2000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))


def configure() -> str:
    import django
    from django.conf import settings

    from testproject.databases import database_from_url

    url = os.environ.get("BENCH_DATABASE_URL") or (
        f"sqlite:///{tempfile.mkdtemp(prefix='django_thread_bench_')}/bench.sqlite3"
    )
    database = database_from_url(url)
    database["CONN_MAX_AGE"] = int(os.environ.get("BENCH_CONN_MAX_AGE", "0"))
    if database["ENGINE"].endswith("sqlite3"):
        database["OPTIONS"] = {"timeout": 20}
    apps = [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django_thread",
        "testproject.jobs",
    ]
    if django.VERSION < (6, 0):
        apps.append("django_tasks")
    immediate = (
        "django.tasks.backends.immediate.ImmediateBackend"
        if django.VERSION >= (6, 0)
        else "django_tasks.backends.immediate.ImmediateBackend"
    )
    settings.configure(
        INSTALLED_APPS=apps,
        DATABASES={"default": database},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        TASKS={
            "default": {"BACKEND": immediate},
            "threads": {
                "BACKEND": "django_thread.tasks.ThreadPoolBackend",
                "OPTIONS": {"WORKERS": WORKERS, "MAX_RESULTS": 2 * N},
            },
        },
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    vendor = database["ENGINE"].rsplit(".", 1)[-1]
    return f"{vendor}, CONN_MAX_AGE={database['CONN_MAX_AGE']}"


def trivial(i: int) -> int:
    return i + 1


def one_query(i: int) -> bool:
    from testproject.jobs.models import Record

    return Record.objects.filter(value=i).exists()


def time_backend(task: Any, backend: str) -> float:
    """Seconds from the first enqueue until every result is final."""
    from django_thread.tasks.compat import task_finished

    the_task = task.using(backend=backend)
    done = threading.Semaphore(0)

    def count(**kwargs: Any) -> None:
        done.release()

    task_finished.connect(count, weak=False)
    try:
        start = time.perf_counter()
        results = [the_task.enqueue(i) for i in range(N)]
        for _ in range(N):
            done.acquire()
        for result in results:  # published just after task_finished
            while not result.is_finished:
                result.refresh()
        elapsed = time.perf_counter() - start
    finally:
        task_finished.disconnect(count)
    failed = [r for r in results if r.status != "SUCCESSFUL"]
    if failed:
        raise SystemExit(f"{len(failed)} task(s) failed: {failed[0].errors}")
    return elapsed


def time_executor(executor_class: type, fn: Callable[[int], Any]) -> float:
    start = time.perf_counter()
    with executor_class(max_workers=WORKERS) as executor:
        for future in [executor.submit(fn, i) for i in range(N)]:
            future.result()
    return time.perf_counter() - start


def main() -> None:
    database = configure()
    import django

    import django_thread
    from django_thread.tasks import reset_pools

    try:
        from django.tasks import task
    except ImportError:
        from django_tasks import task  # type: ignore[no-redef]

    print(f"Django {django.get_version()}, Python {sys.version.split()[0]}, {database}")
    print(f"{N} tasks each, {WORKERS} workers\n")
    header = f"{'':28}{'seconds':>9}{'tasks/s':>10}{'vs ThreadPoolBackend':>22}"
    for fn in (trivial, one_query):
        the_task = task(fn)
        time_backend(the_task, "threads")  # warm up: threads, connections
        timings = {
            "ThreadPoolBackend": time_backend(the_task, "threads"),
            "ImmediateBackend": time_backend(the_task, "default"),
            "django_thread executor": time_executor(
                django_thread.ThreadPoolExecutor, fn
            ),
            "stdlib executor": time_executor(concurrent.futures.ThreadPoolExecutor, fn),
        }
        reset_pools()
        print(f"{fn.__name__} tasks")
        print(header)
        reference = timings["ThreadPoolBackend"]
        for name, seconds in timings.items():
            print(
                f"  {name:26}{seconds:9.3f}{N / seconds:10.0f}"
                f"{reference / seconds:21.2f}x"
            )
        print()


if __name__ == "__main__":
    main()
