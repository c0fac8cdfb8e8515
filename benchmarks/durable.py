"""DURABLE ThreadPoolBackend against django-tasks-local-db and db_worker.

``python -m benchmarks.durable --postgres URL [--tasks N]``: on a database
of its own (``<name>_durable_bench``, created and dropped), each backend runs
N trivial tasks and N one-query tasks with 4 workers; throughput is N over
the span from the first ``started_at`` to the last ``finished_at`` of the
rows, so process start-up is not counted. Latency is ``started_at -
enqueued_at`` of 200 tasks enqueued one at a time by the process that runs
them. The idle rate is the transactions an idle process commits per second
(``pg_stat_database.xact_commit`` of the benchmark's database).
django-tasks-local-db (``pip install django-tasks-local-db``, Django 6) is
optional; without it, its rows are left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {
    "durable": "django_thread.tasks.ThreadPoolBackend",
    "local-db": "django_tasks_local_db.backend.LocalDBBackend",
    "db_worker": "django_tasks_db.DatabaseBackend",
}
WORKERS = 4


def configure(url: str, backend: str) -> None:
    """Django settings for one backend, in this process."""
    import django
    from django.conf import settings

    sys.path.insert(0, str(ROOT))
    from testproject.databases import database_from_url

    options: dict[str, Any] = {}
    if backend == "durable":
        options = {"DURABLE": True, "WORKERS": WORKERS}
    elif backend == "local-db":
        options = {"MAX_WORKERS": WORKERS}
    apps = ["django_tasks_db"]
    if importlib.util.find_spec("django_tasks_local_db"):
        apps.append("django_tasks_local_db")
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_thread",
            *apps,
            "testproject.jobs",
        ],
        DATABASES={"default": database_from_url(url, CONN_MAX_AGE=600)},
        TASKS={"default": {"BACKEND": BACKENDS[backend], "OPTIONS": options}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def _task(kind: str) -> Any:
    from benchmarks import durable_tasks

    return getattr(durable_tasks, kind)


def _rows() -> Any:
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.all()


def _wait_finished(count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _rows().filter(finished_at__isnull=False).count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError("tasks did not finish")
        time.sleep(0.02)


def _span_rate(count: int) -> float:
    from django.db.models import Max, Min

    span = _rows().aggregate(start=Min("started_at"), end=Max("finished_at"))
    return count / (span["end"] - span["start"]).total_seconds()


def measure(backend: str, kind: str, count: int, url: str) -> dict[str, Any]:
    """In a process of its own: throughput, latency or idle rate of one backend."""
    configure(url, backend)
    from django.db import connection

    _rows().delete()
    if kind == "idle":
        return {"idle_tx_per_s": _idle_rate(backend, url)}
    task = _task("trivial" if kind == "latency" else kind)
    if backend == "db_worker":
        for _ in range(count):
            task.enqueue()
        connection.close()
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.durable", "db_worker", url],
                cwd=ROOT,
            )
            for _ in range(WORKERS)
        ]
        for worker in workers:
            worker.wait()
        return {"per_s": _span_rate(count)}
    if backend == "local-db":
        from django.tasks import task_backends

        task_backends["default"]._ensure_watcher()
    if kind == "latency":
        latencies = []
        for _ in range(count):
            result = task.enqueue()
            while True:
                row = _rows().get(id=result.id)
                if row.finished_at:
                    break
                time.sleep(0.0005)
            latencies.append((row.started_at - row.enqueued_at).total_seconds())
        return {"median_ms": statistics.median(latencies) * 1000}
    for _ in range(count):
        task.enqueue()
    _wait_finished(count)
    return {"per_s": _span_rate(count)}


def _idle_rate(backend: str, url: str) -> float:
    from django.db import connection
    from django.tasks import task_backends

    if backend == "durable":
        from django_thread.tasks.durable import start_durable_workers

        start_durable_workers()
    else:
        task_backends["default"]._ensure_watcher()
    time.sleep(3)  # started, first polls done

    def commits() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                [connection.settings_dict["NAME"]],
            )
            return int(cursor.fetchone()[0])

    commits()  # connected before the count starts
    time.sleep(1.5)  # pg_stat_database lags by up to a second
    before = commits()
    time.sleep(20)
    # Each measuring query is a transaction of its own: one is counted.
    return (commits() - before - 1) / 20


def run_db_worker(url: str) -> None:
    configure(url, "db_worker")
    from django.core.management import call_command

    call_command("db_worker", batch=True, startup_delay=False, verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.durable")
    parser.add_argument(
        "--postgres", default=os.environ.get("DJANGO_THREAD_TEST_POSTGRES")
    )
    parser.add_argument("--tasks", type=int, default=2000)
    # django-tasks-local-db claims at most WORKERS rows per 1 s poll.
    parser.add_argument("--peer-tasks", type=int, default=200)
    arguments = parser.parse_args()
    if not arguments.postgres:
        parser.error("--postgres URL (or DJANGO_THREAD_TEST_POSTGRES) is required")
    base, _, name = arguments.postgres.rpartition("/")
    url = f"{base}/{name}_durable_bench"
    _create(arguments.postgres, url)
    backends = ["durable", "db_worker"]
    if importlib.util.find_spec("django_tasks_local_db"):
        backends.insert(1, "local-db")
    results: dict[str, dict[str, Any]] = {}
    try:
        for backend in backends:
            row: dict[str, Any] = {}
            for kind in ("trivial", "one_query"):
                count = (
                    arguments.peer_tasks if backend == "local-db" else arguments.tasks
                )
                row[kind] = _child(backend, kind, count, url)["per_s"]
            if backend != "db_worker":
                row["latency"] = _child(backend, "latency", 200, url)["median_ms"]
                row["idle"] = _child(backend, "idle", 0, url)["idle_tx_per_s"]
            results[backend] = row
            print(backend, json.dumps(row), flush=True)
    finally:
        _drop(arguments.postgres, url)
    print(
        f"\n{WORKERS} workers, PostgreSQL, {arguments.tasks} tasks per run "
        f"({arguments.peer_tasks} for local-db)"
    )
    columns = ("trivial/s", "1-query/s", "latency ms", "idle tx/s")
    print(f"{'backend':<10} " + " ".join(f"{c:>10}" for c in columns))
    for backend, row in results.items():
        latency = f"{row['latency']:.1f}" if "latency" in row else "-"
        idle = f"{row['idle']:.2f}" if "idle" in row else "-"
        print(
            f"{backend:<10} {row['trivial']:>10.0f} {row['one_query']:>10.0f} "
            f"{latency:>10} {idle:>10}"
        )


def _child(backend: str, kind: str, count: int, url: str) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.durable",
            "measure",
            backend,
            kind,
            str(count),
            url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if output.returncode:
        raise RuntimeError(output.stderr)
    return dict(json.loads(output.stdout.splitlines()[-1]))


def _create(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "-m", "benchmarks.durable", "migrate", url],
        cwd=ROOT,
        check=True,
    )


def _drop(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}"')


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "measure":
        _, _, backend, kind, count, url = sys.argv
        print(json.dumps(measure(backend, kind, int(count), url)))
    elif command == "db_worker":
        run_db_worker(sys.argv[2])
    elif command == "migrate":
        configure(sys.argv[2], "db_worker")
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    else:
        main()
