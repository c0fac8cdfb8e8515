"""Interpreter exit: live executors finish (or cancel) and close connections."""

from __future__ import annotations

import contextlib
import sqlite3
import textwrap

import pytest

from tests.helpers import REPO_ROOT
from tests.processes import run_python

SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys, threading, time
    sys.path.insert(0, {root!r})
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["TESTPROJECT_DATABASE_URL"] = "sqlite:///" + {db!r}

    opened = []

    def report():  # registered before django_thread's hook, so it runs after it
        still_open = sum(1 for w in opened if w.connection is not None)
        print("still-open", still_open, flush=True)

    atexit.register(report)

    import django
    from django.conf import settings
    django.setup()
    settings.DJANGO_THREAD_CANCEL_AT_EXIT = {cancel}
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 600
    from django.core.management import call_command
    from django.db.backends.signals import connection_created
    call_command("migrate", verbosity=0)
    connection_created.connect(
        lambda connection, **kw: opened.append(connection)
        if threading.current_thread() is not threading.main_thread() else None,
        weak=False,
    )

    from django_thread import ThreadPoolExecutor
    from testproject.jobs.models import Record

    def job(i):
        time.sleep(0.05)
        Record.objects.create(name="exit", value=i)
        print("ran", i, flush=True)

    executor = ThreadPoolExecutor(max_workers=1)
    for i in range(4):
        executor.submit(job, i)
    time.sleep(0.01)  # the first job is running, the rest are queued
    # No shutdown(): the interpreter exits with work queued.
    """
)


@pytest.mark.parametrize("cancel", [False, True], ids=["drain", "cancel"])
def test_live_executor_is_shut_down_at_exit(tmp_path, cancel):
    script = SCRIPT.format(
        root=str(REPO_ROOT), db=str(tmp_path / "exit.sqlite3"), cancel=cancel
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    ran = [line for line in result.stdout.splitlines() if line.startswith("ran")]
    # Said before the wait: what is pending, and how long exit may take.
    assert (
        "Exiting with unfinished work: ThreadPoolExecutor-0: 1 running, 3 queued."
        in result.stderr
    )
    if cancel:
        assert ran == ["ran 0"]  # the running job finished; queued ones were cancelled
        assert "pools' running work (queued work is cancelled)" in result.stderr
        assert "ThreadPoolExecutor-0: 3 queued job(s) cancelled at exit" in (
            result.stderr
        )
    else:
        assert ran == ["ran 0", "ran 1", "ran 2", "ran 3"]
        assert "for the pools' work, with no time limit." in result.stderr
        assert "cancelled" not in result.stderr
    assert "still-open 0" in result.stdout.splitlines()


UNWAITED = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["TESTPROJECT_DATABASE_URL"] = "sqlite:///" + {db!r}
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)

    from django_thread import ThreadPoolExecutor
    from testproject.jobs.models import Record

    def job(i):
        time.sleep(0.005)
        Record.objects.create(name="unwaited", value=i)

    executor = ThreadPoolExecutor(max_workers=2)
    for i in range(20):
        executor.submit(job, i)
    if {how!r} == "shutdown":
        executor.shutdown(wait=False)
    else:
        del executor  # collected with its work still queued
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize("how", ["shutdown", "collected"])
def test_pending_work_still_runs_at_exit_when_nobody_waits_for_it(tmp_path, how):
    """The stdlib's promise: pending futures finish before the interpreter exits."""
    db = tmp_path / "unwaited.sqlite3"
    script = UNWAITED.format(root=str(REPO_ROOT), db=str(db), how=how)
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["exiting"]
    with contextlib.closing(sqlite3.connect(db)) as connection:
        (rows,) = connection.execute(
            "SELECT count(*) FROM jobs_record WHERE name = 'unwaited'"
        ).fetchone()
    assert rows == 20
