"""Run every benchmark in one process and print one report.

``python -m benchmarks [--quick] [--postgres URL]``: the executor against
its references on SQLite and PostgreSQL at 1 and 2 workers, the scaling of
a 1 ms job from 1 to 16 workers, the Tasks backend against the executor and
django-tasks-local, a breakdown of one unit's cost, and the issue's targets.
``--only durable`` (PostgreSQL; not in the default set, it takes minutes)
adds DURABLE against django-tasks-local-db, when installed, and
django-tasks-db's ``db_worker`` (``benchmarks/durable.py``).
PostgreSQL is ``--postgres`` or ``DJANGO_THREAD_TEST_POSTGRES``; without
either (or when unreachable) only SQLite runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--postgres", help="e.g. postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument(
        "--rounds", type=int, help="rounds per measurement (7; 3 quick)"
    )
    parser.add_argument(
        "--only",
        default="executor,scaling,tasks,breakdown",
        help="comma-separated sections to run",
    )
    return parser.parse_args()


def main() -> None:
    arguments = parse()
    rounds = arguments.rounds or (3 if arguments.quick else 7)
    target = 0.05 if arguments.quick else 0.15  # seconds per batch
    task_counts = (500, 250) if arguments.quick else (2000, 1000)
    task_workers = 4
    sections = set(arguments.only.split(","))

    from benchmarks import configuration

    url = configuration.postgres_url(arguments.postgres)
    configuration.configure(url, task_workers, max_results=2 * task_counts[0])

    from benchmarks import breakdown, executor_benchmark, jobs, targets, tasks_benchmark

    targets.print_header(url, rounds)
    matrices = {}
    if "executor" in sections:
        for workers in (1, 2):
            matrices[workers] = executor_benchmark.run_matrix(
                bool(url), workers, rounds, target
            )
    if "scaling" in sections and url:
        executor_benchmark.run_scaling(rounds, target)
    tasks = {}
    if "tasks" in sections:
        database, label = ("pg", "PostgreSQL") if url else ("default", "SQLite")
        tasks = tasks_benchmark.run_tasks(
            database, label, task_workers, task_counts, rounds
        )
    if "breakdown" in sections:
        breakdown.run(2000 if arguments.quick else 20000)
    targets.print_targets(matrices, tasks, jobs.supports_persistent_connections())
    if "durable" in sections and url:
        # Processes of its own, on a database of its own: see its docstring.
        count = "500" if arguments.quick else "2000"
        command = ["-m", "benchmarks.durable", "--postgres", url, "--tasks", count]
        subprocess.run([sys.executable, *command], check=True)


if __name__ == "__main__":
    main()
