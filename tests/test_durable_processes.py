"""DURABLE tasks across real processes: kill -9, the outbox, fork, exit, db_worker.

Worker processes run testproject with ``tests/durable_settings.py`` on the
test database of the alias, started with ``start_durable_workers()`` and
stopped by closing their stdin (a clean exit) or by SIGKILL. The test
process enqueues through a DURABLE backend with no workers of its own, so
every task runs in another process. Tasks are those of
``tests/durable_tasks.py``: ``chaos`` logs each run in a row committed at
once (``run:<id>``, with the pid), and writes ``done:<id>`` at its end.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings
from django_tasks_db.models import DBTaskResult

from django_thread.tasks.durable_engine import WORKER_ID_PREFIX
from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT, wait_for
from tests.processes import ServerProcess, database_url, run_python
from tests.tasks.helpers import BACKEND

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")

#: Tasks in the chaos test; DURABLE_CHAOS_TASKS=3000 for the manual run.
CHAOS_TASKS = int(os.environ.get("DURABLE_CHAOS_TASKS", "300"))

PRELUDE = """
import json, os, sys, threading, time
sys.path.insert(0, {root!r})
sys.stdout.reconfigure(line_buffering=True)
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.durable_settings"
os.environ["TESTPROJECT_DATABASE_URL"] = {url!r}
import django
django.setup()
from django_tasks_db.models import DBTaskResult
from tests import durable_tasks

def report(**values):
    print(json.dumps(values, default=str))
"""

WORKER = """
from django_thread.tasks.durable import start_durable_workers
start_durable_workers()
print("ready")
sys.stdin.read()  # until the test closes it, or kills this process
"""


def script(alias: str, body: str) -> str:
    prelude = PRELUDE.format(root=str(REPO_ROOT), url=database_url(alias))
    return prelude + textwrap.dedent(body)


def durable(**settings: Any) -> dict[str, str]:
    """``DURABLE_*`` variables, which tests/durable_settings.py reads."""
    return {f"DURABLE_{name.upper()}": str(value) for name, value in settings.items()}


def environment(**settings: Any) -> dict[str, str]:
    """A worker's environment: run_python's, with these settings."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(durable(**settings))
    return env


class Workers:
    """Worker processes of one test; all are ended when it ends."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, **settings: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", script(self.alias, WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(**settings),
        )
        self.processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", process.stderr
        return process

    def stop(self, process: subprocess.Popen[str], timeout: float = 30) -> str:
        """Exit cleanly (stdin closed); return what the process logged."""
        _, stderr = process.communicate(input="", timeout=timeout)
        assert process.returncode == 0, stderr
        return stderr

    def stop_all(self) -> str:
        """Stop every live process cleanly; return what all of them logged."""
        logs = []
        for process in self.processes:
            alive = process.poll() is None
            _, stderr = process.communicate(input="" if alive else None, timeout=60)
            logs.append(f"--- pid {process.pid}:\n{stderr}")
        return "\n".join(logs)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


@pytest.fixture
def workers(alias: str) -> Iterator[Workers]:
    started = Workers(alias)
    try:
        yield started
    finally:
        started.close()


@contextlib.contextmanager
def enqueuer(alias: str) -> Iterator[None]:
    """This process enqueues DURABLE tasks and runs none (WORKERS 0)."""
    setting = {
        "default": {
            "BACKEND": BACKEND,
            "OPTIONS": {"DURABLE": True, "DATABASE": alias, "WORKERS": 0},
        }
    }
    with override_settings(TASKS=setting):
        yield


def chaos_task() -> Any:
    from tests import durable_tasks

    return durable_tasks.chaos


def runs_by_task(alias: str) -> dict[str, list[int]]:
    """Each task id with the pids of its runs, in order."""
    runs: dict[str, list[int]] = collections.defaultdict(list)
    for name, pid in (
        Record.objects.using(alias)
        .filter(name__startswith="run:")
        .order_by("id")
        .values_list("name", "value")
    ):
        runs[name[4:]].append(pid)
    return runs


def done_ids(alias: str) -> set[str]:
    names = Record.objects.using(alias).filter(name__startswith="done:")
    return {name[5:] for name in names.values_list("name", flat=True)}


def normal(task_id: Any) -> str:
    return str(task_id).replace("-", "")


def victim_is_running_a_task(alias: str, pid: int) -> bool:
    done = {normal(task) for task in done_ids(alias)}
    return any(
        pid in pids and normal(task) not in done
        for task, pids in runs_by_task(alias).items()
    )


def test_chaos_kill_9_loses_nothing(alias, workers):
    """3 processes; one is killed -9 twice mid-run and restarted: 0 lost.

    Runs of a task beyond the first happen only where an earlier run was in
    a killed process; they are counted and reported.
    """
    settings = {"workers": 4, "lease": 3}
    with enqueuer(alias):
        with transaction.atomic(using=alias):
            ids = {normal(chaos_task().enqueue(0.05).id) for _ in range(CHAOS_TASKS)}
    victim = workers.start(**settings)
    workers.start(**settings)
    workers.start(**settings)
    killed: list[int] = []
    for at_least in (CHAOS_TASKS // 5, CHAOS_TASKS // 2):
        wait_for(
            lambda n=at_least: len(runs_by_task(alias)) >= n,
            f"{at_least} tasks to start",
            timeout=60,
        )
        # Killed mid-task: a task it started is not done (on SQLite, where the
        # processes take turns writing, it may otherwise be between tasks).
        wait_for(
            lambda pid=victim.pid: victim_is_running_a_task(alias, pid),
            "the victim to be running a task",
            timeout=60,
        )
        killed.append(victim.pid)
        victim.kill()
        victim.wait()
        victim = workers.start(**settings)
    wait_for(lambda: len(done_ids(alias)) >= len(ids), "every task", timeout=120)
    wait_for(
        lambda: (
            not DBTaskResult.objects.using(alias).exclude(status="SUCCESSFUL").exists()
        ),
        "every row to be SUCCESSFUL",
        timeout=30,
    )
    logs = workers.stop_all()
    assert {normal(i) for i in done_ids(alias)} == ids  # 0 lost
    runs = runs_by_task(alias)
    repeated = {task: pids for task, pids in runs.items() if len(pids) > 1}
    for task, pids in repeated.items():
        # Every run but the last was cut off by a kill.
        assert set(pids[:-1]) <= set(killed), (task, pids, killed, logs)
    assert repeated, "no task was running when its process was killed"
    print(
        f"\nchaos on {alias}: {len(ids)} tasks, 0 lost, {len(repeated)} run twice "
        f"(all running in the {len(killed)} killed processes)"
    )


def test_outbox_commit_runs_even_if_killed_at_once_rollback_never(alias, workers):
    body = """
    from django.db import transaction
    with transaction.atomic():
        try:
            with transaction.atomic():
                dropped = durable_tasks.chaos.enqueue(0)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        kept = durable_tasks.chaos.enqueue(0)
    report(kept=kept.id, dropped=dropped.id)
    os.kill(os.getpid(), 9)  # right after the commit: nothing ran here yet
    """
    process = run_python(script(alias, body), env=durable(workers=4, lease=3))
    assert process.returncode == -signal.SIGKILL, process.stderr
    ids = json.loads(process.stdout.splitlines()[-1])
    workers.start(lease=3)
    kept = normal(ids["kept"])
    wait_for(lambda: kept in {normal(i) for i in done_ids(alias)}, "kept", timeout=30)
    assert not DBTaskResult.objects.using(alias).filter(id=ids["dropped"]).exists()
    assert normal(ids["dropped"]) not in {normal(i) for i in runs_by_task(alias)}


def test_rows_of_database_backend_run_here(alias, workers):
    body = """
    results = [durable_tasks.add.enqueue(n, 1) for n in range(10)]
    report(backend=type(results[0].task.get_backend()).__name__)
    """
    process = run_python(script(alias, body), env=durable(backend="db"))
    assert process.returncode == 0, process.stderr
    assert "DatabaseBackend" in process.stdout
    workers.start()
    rows = DBTaskResult.objects.using(alias)
    wait_for(lambda: rows.filter(status="SUCCESSFUL").count() == 10, "10 tasks", 30)
    assert sorted(rows.values_list("return_value", flat=True)) == list(range(1, 11))
    for worker_ids in rows.values_list("worker_ids", flat=True):
        assert worker_ids[-1].startswith(WORKER_ID_PREFIX)


def test_rows_of_durable_backend_run_by_db_worker(alias):
    with enqueuer(alias):
        results = [chaos_task().enqueue(0) for _ in range(5)]
    process = run_python(
        args=["-m", "django", "db_worker", "--batch", "--no-startup-delay"]
        + ["--worker-id", "db-worker-1"],
        cwd=REPO_ROOT,
        env={
            **durable(workers=0),
            "DJANGO_SETTINGS_MODULE": "tests.durable_settings",
            "TESTPROJECT_DATABASE_URL": database_url(alias),
            "PYTHONPATH": str(REPO_ROOT),
        },
    )
    assert process.returncode == 0, process.stderr
    for result in results:
        row = DBTaskResult.objects.using(alias).get(id=result.id)
        assert row.status == "SUCCESSFUL", row.traceback
        assert row.worker_ids == ["db-worker-1"]
    assert len(done_ids(alias)) == 5


FORK = """
from django.core.signals import request_started
from django_thread.tasks.durable import start_durable_workers
start_durable_workers()
slow = durable_tasks.chaos.enqueue(1.5)
while DBTaskResult.objects.get(id=slow.id).status != "RUNNING":
    time.sleep(0.01)
queued = [durable_tasks.chaos.enqueue(0) for _ in range(4)]  # claimed or not
parent_id = DBTaskResult.objects.get(id=slow.id).worker_ids[-1]
from django.db import connections
connections.close_all()  # the forking thread's own, as README's "Processes" says
child = os.fork()
if child == 0:
    request_started.send(sender=None)  # its first request starts its workers
    mine = durable_tasks.pid.enqueue()
    while not DBTaskResult.objects.get(id=mine.id).finished_at:
        time.sleep(0.01)
    row = DBTaskResult.objects.get(id=mine.id)
    report(child_pid=os.getpid(), child_ran=row.return_value)
    report(child_worker=row.worker_ids[-1])
    sys.exit(0)
_, status = os.waitpid(child, 0)
while not DBTaskResult.objects.get(id=slow.id).finished_at:
    time.sleep(0.01)
row = DBTaskResult.objects.get(id=slow.id)
report(child_exit=os.waitstatus_to_exitcode(status), parent_id=parent_id,
       slow_workers=row.worker_ids, slow_status=row.status, parent_pid=os.getpid(),
       slow_pid=row.return_value)
"""


def test_forked_child_runs_its_own_workers_and_claims_nothing_of_the_parent(alias):
    process = run_python(script(alias, FORK), env=durable(workers=1, lease=3))
    assert process.returncode == 0, process.stderr
    reports: dict[str, Any] = {}
    for line in process.stdout.splitlines():
        reports.update(json.loads(line))
    assert reports["child_exit"] == 0
    assert reports["child_ran"] == reports["child_pid"]
    assert reports["child_worker"] != reports["parent_id"]
    assert reports["slow_workers"] == [reports["parent_id"]]
    assert reports["slow_status"] == "SUCCESSFUL"
    assert reports["slow_pid"] == reports["parent_pid"]


def test_exit_leaves_cut_off_tasks_for_recovery_and_queued_rows_queued(alias, workers):
    worker = workers.start(workers=2, lease=3, stop_timeout=0.5)
    with enqueuer(alias):
        slow = [chaos_task().enqueue(3) for _ in range(2)]
        wait_for(
            lambda: (
                DBTaskResult.objects.using(alias).filter(status="RUNNING").count() == 2
            ),
            "2 tasks to run",
            timeout=10,
        )
        queued = [chaos_task().enqueue(0) for _ in range(3)]
    # Claimed or not, the queued rows are READY again after a clean exit.
    started = time.monotonic()
    stderr = workers.stop(worker)
    assert time.monotonic() - started < 3  # STOP_TIMEOUT, not the 3 s tasks
    assert "2 task(s) still running at exit were cut off" in stderr, stderr
    assert "LEASE=3.0 s" in stderr
    rows = DBTaskResult.objects.using(alias)
    assert set(
        rows.filter(id__in=[r.id for r in slow]).values_list("status", flat=True)
    ) == {"RUNNING"}
    for row in rows.filter(id__in=[r.id for r in queued]):
        assert row.status in ("READY", "SUCCESSFUL"), row.status
        assert row.status == "SUCCESSFUL" or row.worker_ids == []
    assert not rows.filter(status="FAILED").exists()
    workers.start(lease=3)  # the deployment, restarted
    wait_for(
        lambda: rows.filter(status="SUCCESSFUL").count() == 5,
        "every task after recovery",
        timeout=30,
    )
    assert len(done_ids(alias)) == 5
    for row in rows.filter(id__in=[r.id for r in slow]):
        assert len(row.worker_ids) == 2  # cut off once, then run again


class Gunicorn(ServerProcess):
    """``gunicorn --preload`` with 2 workers on testproject, DURABLE."""

    def __init__(self, alias: str) -> None:
        super().__init__(
            [
                "gunicorn",
                "--preload",
                "--workers=2",
                "--bind=127.0.0.1:0",
                "--graceful-timeout=1",
                "django.core.wsgi:get_wsgi_application()",
            ],
            {
                **durable(workers=2, lease=3),
                "DJANGO_SETTINGS_MODULE": "tests.durable_settings",
                "TESTPROJECT_DATABASE_URL": database_url(alias),
            },
            str(REPO_ROOT),
        )
        self.port = int(
            self.wait_for_line(r"Listening at: http://127\.0\.0\.1:(\d+)")[0][1]
        )

    def enqueue(self, seconds: float) -> str:
        url = f"http://127.0.0.1:{self.port}/enqueue/?seconds={seconds}"
        with urllib.request.urlopen(url, timeout=15) as response:
            return str(json.loads(response.read())["task"])

    def terminate(self) -> str:
        """SIGTERM; what the server printed."""
        self.stop(signal.SIGTERM, timeout=30)
        return self.output()


def test_gunicorn_sigterm_with_short_graceful_timeout_loses_no_task(alias):
    """2 s tasks, SIGTERM, --graceful-timeout 1: every task runs, after restart."""
    server = Gunicorn(alias)
    try:
        ids = {normal(server.enqueue(2)) for _ in range(8)}
        time.sleep(0.5)  # the first ones are running
    finally:
        first = server.terminate()
    done_before = ids & {normal(i) for i in done_ids(alias)}
    assert len(done_before) < len(ids), "no task was cut off: nothing tested"
    restarted = Gunicorn(alias)
    try:
        restarted.enqueue(0)  # its workers start with their first request
        restarted.enqueue(0)
        rows = DBTaskResult.objects.using(alias).filter(id__in=list(ids))
        wait_for(
            lambda: rows.filter(status="SUCCESSFUL").count() == len(ids), "8 tasks", 60
        )
    finally:
        second = restarted.terminate()
    assert ids <= {normal(i) for i in done_ids(alias)}, first + second


BAD_STOP_TIMEOUT = """
from django.conf import settings
from django_thread.tasks.durable import start_durable_workers

start_durable_workers()
# No system check runs in a script: the bad value reaches the exit hook.
settings.DJANGO_THREAD_STOP_TIMEOUT = None
result = durable_tasks.chaos.enqueue(0.5)
while DBTaskResult.objects.get(id=result.id).status != "RUNNING":
    time.sleep(0.01)
report(task=str(result.id))
"""


def test_a_bad_stop_timeout_at_exit_is_logged_and_the_running_task_finishes(alias):
    """At exit a running task gets the default STOP_TIMEOUT, not a crash."""
    result = run_python(script(alias, BAD_STOP_TIMEOUT))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    warnings = [
        line
        for line in result.stderr.splitlines()
        if "DJANGO_THREAD_STOP_TIMEOUT" in line
    ]
    assert any("django_thread.E006" in line for line in warnings), result.stderr
    task = json.loads(result.stdout.splitlines()[-1])["task"]
    row = DBTaskResult.objects.using(alias).get(id=task)
    assert row.status == "SUCCESSFUL", result.stderr


NOT_MIGRATED = """
import time
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import transaction
from django_thread.tasks.durable import start_durable_workers
from testproject.jobs.models import Record

call_command("migrate", "jobs", verbosity=0)  # Record's table, not DURABLE's
errors = []
try:
    durable_tasks.add.enqueue(1, 2)
except ImproperlyConfigured as exc:
    errors.append(str(exc))
with transaction.atomic():
    Record.objects.create(name="before", value=1)
    try:
        durable_tasks.add.enqueue(1, 2)
    except ImproperlyConfigured as exc:
        errors.append(str(exc))
    Record.objects.create(name="after", value=2)  # the caller's transaction lives
start_durable_workers()
time.sleep(1.5)  # seven polls at POLL_INTERVAL 0.2 s, each failing
call_command("migrate", verbosity=0)
result = durable_tasks.add.enqueue(2, 3)
deadline = time.monotonic() + 30
while result.status != "SUCCESSFUL" and time.monotonic() < deadline:
    time.sleep(0.05)
    result.refresh()
report(errors=errors, records=Record.objects.count(), status=str(result.status))
"""


@contextlib.contextmanager
def unmigrated_database(alias: str, tmp_path: Any) -> Iterator[str]:
    """A URL of an empty database on the alias's server (a file on SQLite)."""
    from django.db import connections

    connection = connections[alias]
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'unmigrated.sqlite3'}"
        return
    name = f"test_django_thread_unmigrated_{os.getpid()}"
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {quoted}")
    try:
        current = connection.settings_dict["NAME"]
        yield database_url(alias).replace(f"/{current}", f"/{name}", 1)
    finally:
        force = " WITH (FORCE)" if connection.vendor == "postgresql" else ""
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {quoted}{force}")


def test_not_migrated_is_said_once_clearly_and_nothing_runs_until_migrate(
    alias, tmp_path
):
    """Before migrate: a clear enqueue error and one log line; after it, tasks run."""
    with unmigrated_database(alias, tmp_path) as url:
        prelude = PRELUDE.format(root=str(REPO_ROOT), url=url)
        result = run_python(prelude + NOT_MIGRATED, timeout=90)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert len(outcome["errors"]) == 2, outcome
    for error in outcome["errors"]:
        assert "has no table django_tasks_database_dbtaskresult" in error
        assert "Run manage.py migrate --database default" in error
    assert outcome["records"] == 2  # the failed enqueue left the caller's alone
    assert outcome["status"] == "SUCCESSFUL", result.stderr
    said = [line for line in result.stderr.splitlines() if "no task runs here" in line]
    assert len(said) == 1, result.stderr
    assert "polling 'default' failed" not in result.stderr
