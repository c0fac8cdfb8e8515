"""What a call through ``django_thread.ThreadPoolExecutor`` costs, next to references.

Every pool of a row gets the same ``max_workers`` and the same job, is
started and warmed up (workers started, connections open), and then runs
interleaved rounds of one batch each: submit N calls, wait for all. A batch
is sized to last about ``target`` seconds on the slowest pool. The pools:

``stdlib``
    ``concurrent.futures.ThreadPoolExecutor``, bare: it never closes a
    connection, so at ``CONN_MAX_AGE = 0`` it still reuses one per worker.
``0.0.1 recipe``
    the same pool, ``close_old_connections()`` before and after each job.
``floor``
    the same pool sending ``request_started`` and ``request_finished``
    around each job, in the worker: the floor of django-thread's design.
``keep floor``
    the floor, but each worker keeps its connections for its lifetime
    (their ``close_at`` lifted after each job): the floor for persistent
    connections, which the plain floor is not at ``CONN_MAX_AGE = 0``.
``ours`` / ``ours persistent``
    ``django_thread.ThreadPoolExecutor`` with its defaults, and with
    ``persistent_connections=True`` (n/a where that keyword does not exist).

The native pool row runs the same bare job everywhere: a stdlib worker then
keeps one pooled connection for itself (the pool holds one per worker).
"""

from __future__ import annotations

import functools
from concurrent import futures

from benchmarks.jobs import Job, noop, orm_query, server_wait, sides
from benchmarks.timing import Stat, calls_for, interleaved, ratio

SCALING_WORKERS = (1, 2, 4, 8, 16)
#: The floor too: where the GIL saturates, the signals' own cost shows.
SCALING_SIDES = ("stdlib", "floor", "ours")


def batch(executor: futures.Executor, job: Job, calls: int) -> float:
    """Seconds per call for one batch: submit them all, then wait for all."""
    import time

    start = time.perf_counter()
    submitted = [executor.submit(job) for _ in range(calls)]
    futures.wait(submitted)
    elapsed = time.perf_counter() - start
    for future in submitted:
        future.result()  # a failing job would make the numbers meaningless
    return elapsed / calls


def measure(
    job: Job, workers: int, rounds: int, target: float, only: tuple[str, ...] = ()
) -> dict[str, list[float]]:
    """Per-call seconds of every available pool, one value per round."""
    available = {
        name: side
        for name, side in sides().items()
        if side is not None and (not only or name in only)
    }
    pools = {name: factory(workers) for name, (factory, _) in available.items()}
    jobs = {name: wrap(job) for name, (_, wrap) in available.items()}
    try:
        for name, pool in pools.items():  # start workers, open connections
            batch(pool, jobs[name], max(20, 4 * workers))
        slowest = max(batch(pool, jobs[name], 30) for name, pool in pools.items())
        calls = calls_for(slowest, target)
        return interleaved(
            {
                name: functools.partial(batch, pool, jobs[name], calls)
                for name, pool in pools.items()
            },
            rounds,
        )
    finally:
        for pool in pools.values():
            pool.shutdown()


def rows(postgres: bool) -> dict[str, dict[str, Job]]:
    """The jobs, by database."""
    found = {
        "SQLite": {
            "no-op": noop,
            "query, CONN_MAX_AGE=600": orm_query("default"),
            "query, CONN_MAX_AGE=0": orm_query("sqlite0"),
        }
    }
    if postgres:
        found["PostgreSQL"] = {
            "no-op": noop,
            "query, CONN_MAX_AGE=600": orm_query("pg"),
            "query, CONN_MAX_AGE=0": orm_query("pg0"),
            "query, native pool": orm_query("pgpool"),
            "1 ms query, CONN_MAX_AGE=600": server_wait("pg"),
        }
    return found


#: The ratios printed under each table: (label, side, reference).
RATIOS = (
    ("ours/floor", "ours", "floor"),
    ("ours/stdlib", "ours", "stdlib"),
    ("pers/floor", "ours persistent", "floor"),
    ("pers/keep", "ours persistent", "keep floor"),
    ("pers/stdlib", "ours persistent", "stdlib"),
    ("recipe/stdlib", "0.0.1 recipe", "stdlib"),
)


def print_table(title: str, results: dict[str, dict[str, list[float]]]) -> None:
    names = list(sides())
    print(f"\n{title}: µs per call (median ±half the range of the rounds)")
    print(f"{'job':<30}" + "".join(f"{name:>17}" for name in names))
    for job, values in results.items():
        cells = [
            Stat.of(values[name]).format(1e6) if name in values else "n/a"
            for name in names
        ]
        print(f"{job:<30}" + "".join(f"{cell:>17}" for cell in cells))
    print(f"{'ratios, round by round':<30}" + "".join(f"{r[0]:>17}" for r in RATIOS))
    for job, values in results.items():
        cells = [
            ratio(values, side, reference).format(digits=2) if side in values else "n/a"
            for _, side, reference in RATIOS
        ]
        print(f"{job:<30}" + "".join(f"{cell:>17}" for cell in cells))


def run_matrix(
    postgres: bool, workers: int, rounds: int, target: float
) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Every job on every database; print one table per database."""
    collected = {}
    for database, jobs in rows(postgres).items():
        results = {
            name: measure(job, workers, rounds, target) for name, job in jobs.items()
        }
        plural = "s" if workers > 1 else ""
        print_table(f"Executor, {database}, {workers} worker{plural}", results)
        collected.update({(database, name): values for name, values in results.items()})
    return collected


def run_scaling(rounds: int, target: float) -> None:
    """Throughput of the 1 ms job as workers are added, next to the stdlib's."""
    job = server_wait("pg")
    print("\nScaling, PostgreSQL, 1 ms query, CONN_MAX_AGE=600: jobs per second")
    print(
        f"{'max_workers':<14}"
        + "".join(f"{n:>16}" for n in SCALING_SIDES)
        + f"{'ours/stdlib time':>20}"
        + f"{'ours/floor time':>20}"
    )
    for workers in SCALING_WORKERS:
        values = measure(job, workers, rounds, target, only=SCALING_SIDES)
        throughput = [Stat.of([1 / v for v in values[n]]) for n in SCALING_SIDES]
        print(
            f"{workers:<14}"
            + "".join(f"{stat.format(digits=0):>16}" for stat in throughput)
            + f"{ratio(values, 'ours', 'stdlib').format(digits=2):>20}"
            + f"{ratio(values, 'ours', 'floor').format(digits=2):>20}"
        )
