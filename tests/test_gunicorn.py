"""End to end under ``gunicorn --preload``: pools warmed in the master work in workers.

gunicorn imports the application in the master, where both pools (a
module-level executor and the Tasks backend) run work, then forks two
workers. HTTP requests then hand work to both pools in the workers; each
request waits for its work, so a dead pool fails the request.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT, server_connection_count, wait_for
from tests.processes import database_url

REQUESTS = 30  # per pool


class Server:
    """A gunicorn master and its output, read as it comes."""

    def __init__(self, url: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env["TESTPROJECT_DATABASE_URL"] = url
        env["PYTHONPATH"] = str(REPO_ROOT)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--preload",
                "--workers=2",
                "--bind=127.0.0.1:0",  # a free port, which gunicorn logs
                "--graceful-timeout=20",
                "tests.gunicorn_app:application",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        deadline = time.monotonic() + 30
        while True:
            found = [m for m in map(re.compile(pattern).search, self.lines) if m]
            if len(found) >= count:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in:\n{self.output()}")
            time.sleep(0.02)

    def stop(self) -> int | None:
        """SIGTERM (graceful), bounded; SIGKILL if it does not end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode


def get(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=15) as response:
        return json.loads(response.read())


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_gunicorn_preload_workers_run_work_on_pools_warmed_in_the_master():
    alias = "postgres"
    server = Server(database_url(alias))
    try:
        master = json.loads(server.wait_for_line(r"^\{.*\"master\".*\}$")[0].group(0))
        port = server.wait_for_line(r"Listening at: http://127\.0\.0\.1:(\d+)")[0][1]
        workers = {
            int(m[1])
            for m in server.wait_for_line(r"Booting worker with pid: (\d+)", 2)
        }
        base = f"http://127.0.0.1:{port}/record/"
        urls = [f"{base}?via=executor&name=executor"] * REQUESTS + [
            f"{base}?via=task&name=task"
        ] * REQUESTS
        with ThreadPoolExecutor(max_workers=4) as clients:
            replies = list(clients.map(get, urls))
        # The master's sessions survived its workers' start.
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                [master["sessions"]],
            )
            master_alive = cursor.fetchone()[0]
    finally:
        returncode = server.stop()
    assert returncode == 0, server.output()
    assert {reply["process"] for reply in replies} <= workers
    assert master["master"] not in workers
    assert not {reply["session"] for reply in replies} & set(master["sessions"])
    assert master_alive == len(master["sessions"]) == 2
    rows = Record.objects.using(alias)
    assert rows.filter(name="executor").count() == REQUESTS
    assert rows.filter(name="task").count() == REQUESTS
    # Master and workers closed every session they opened when they stopped.
    wait_for(lambda: server_connection_count(alias) == 0, "sessions to end")
