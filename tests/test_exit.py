"""Interpreter exit: live executors finish (or cancel) and close connections."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO_ROOT

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
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    ran = [line for line in result.stdout.splitlines() if line.startswith("ran")]
    if cancel:
        assert ran == ["ran 0"]  # the running job finished; queued ones were cancelled
    else:
        assert ran == ["ran 0", "ran 1", "ran 2", "ran 3"]
    assert "still-open 0" in result.stdout.splitlines()
