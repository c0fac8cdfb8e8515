"""What exit says about the work it waits for, and about what it drops.

A process that is told to stop (SIGTERM, as gunicorn tells a worker) may be
killed before its pools drain. One WARNING line, before the wait, records
what was pending and how long the wait may take; after it, each thing that
did not finish is logged. The rows written are counted on the server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT
from tests.processes import database_url

SCRIPT = """
import datetime, os, signal, sys, threading, time
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.process_settings"
os.environ["TESTPROJECT_DATABASE_URL"] = {url!r}
import django
from django.conf import settings
django.setup()
settings.DJANGO_THREAD_STOP_TIMEOUT = 0.2
from django.utils import timezone

from django_thread import Thread, ThreadPoolExecutor
from testproject.jobs.models import Record
from tests.process_tasks import slow, slow_started

# As a gunicorn worker does: SIGTERM ends the process through normal exit.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

class Stubborn(Thread):
    def run(self):
        time.sleep(3)  # never looks at self.stopping

Stubborn(name="stubborn", daemon=True).start()

job_started = threading.Event()

def job(i):
    job_started.set()
    time.sleep(0.5)
    Record.objects.create(name="report-job", value=i)

executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")
for i in range(3):
    executor.submit(job, i)
solo = slow.using(queue_name="solo")  # one worker
for _ in range(3):
    solo.enqueue("report-task")
later = timezone.now() + datetime.timedelta(hours=1)
deferred = solo.using(run_after=later).enqueue("report-deferred")
job_started.wait(10)
slow_started.wait(10)
print("ready", flush=True)
time.sleep(30)
"""


def test_sigterm_exit_says_what_is_pending_then_what_did_not_finish(alias):
    script = textwrap.dedent(SCRIPT).format(
        root=str(REPO_ROOT), url=database_url(alias)
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    lines = stderr.splitlines()
    report = [line for line in lines if line.startswith("Exiting with unfinished")]
    assert report == [
        "Exiting with unfinished work: reports: 1 running, 2 queued; "
        "tasks backend 'default': 1 running, 2 queued, 1 deferred; "
        "1 Thread(s) to stop. Waiting up to 0.2 s for the Threads to stop "
        "(DJANGO_THREAD_STOP_TIMEOUT), then for the pools' work, with no time "
        "limit. Deferred tasks are dropped."
    ], stderr
    # After the wait: what did not finish.
    assert any("Thread stubborn did not stop" in line for line in lines), stderr
    assert any(
        "Task backend 'default' shut down with 1 task(s) that will not run" in line
        for line in lines
    ), stderr
    rows = Record.objects.using(alias)
    assert rows.filter(name="report-job").count() == 3
    assert rows.filter(name="report-task").count() == 3
    assert rows.filter(name="report-deferred").count() == 0
