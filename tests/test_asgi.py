"""End to end under uvicorn: ``CONN_MAX_AGE`` under ASGI, with and without the line.

uvicorn serves testproject on PostgreSQL with ``CONN_MAX_AGE = 600``. 300
requests go to a sync view and to async views that reach the ORM through
``sync_to_async`` (thread-sensitive, and not) and ``to_thread``. The
server's sessions are counted by their ``application_name`` while the
requests run, once they are done, and after the server stopped, and
compared with the number of threads the server process has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from django.db import connections

from tests.helpers import REPO_ROOT, wait_for
from tests.processes import database_url

REQUESTS = 300
CLIENTS = 8
VIEWS = ["sync", "thread-sensitive", "thread-pool", "to-thread"]


class Uvicorn:
    """A uvicorn server on a free port, serving ``application`` (module:name)."""

    def __init__(self, application: str, application_name: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env["DJANGO_SETTINGS_MODULE"] = "tests.asgi_settings"
        env["TESTPROJECT_DATABASE_URL"] = database_url("postgres")
        env["TESTPROJECT_APPLICATION_NAME"] = application_name
        env["PYTHONPATH"] = str(REPO_ROOT)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--host=127.0.0.1",
                "--port=0",
                "--lifespan=off",
                "--no-access-log",
                application,
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
        self.base = f"http://127.0.0.1:{self._port()}/asgi/"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def _port(self) -> str:
        deadline = time.monotonic() + 30
        while True:
            for line in self.lines:
                if "Uvicorn running on http://127.0.0.1:" in line:
                    return line.split("127.0.0.1:")[1].split()[0]
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not start:\n{self.output()}")
            time.sleep(0.02)

    def get(self, view: str) -> dict[str, int]:
        with urllib.request.urlopen(self.base + view + "/", timeout=15) as response:
            return json.loads(response.read())

    def stop(self) -> int | None:
        """SIGINT (uvicorn's graceful stop), bounded."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode


def sessions(application_name: str) -> int:
    with connections["postgres"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


@dataclass
class Counts:
    during: int  # the most sessions seen while the requests ran
    after: int  # once they were done
    threads: int  # the server's threads then
    after_shutdown: int


def serve_requests(application: str) -> Counts:
    application_name = f"dt_asgi_{os.getpid()}_{application.rpartition(':')[2]}"
    server = Uvicorn(application, application_name)
    seen = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            seen[0] = max(seen[0], sessions(application_name))
        connections.close_all()

    sampler = threading.Thread(target=sample)
    try:
        sampler.start()
        views = [VIEWS[i % len(VIEWS)] for i in range(REQUESTS)]
        with ThreadPoolExecutor(max_workers=CLIENTS) as clients:
            replies = list(clients.map(server.get, views))
        done.set()
        sampler.join()
        assert all(reply["session"] > 0 for reply in replies)
        threads = server.get("threads")["threads"]
        after = sessions(application_name)
    finally:
        done.set()
        returncode = server.stop()
    assert returncode == 0, server.output()
    assert "Traceback" not in server.output(), server.output()
    wait_for(lambda: sessions(application_name) == 0, "the server's sessions to end")
    return Counts(seen[0], after, threads, sessions(application_name))


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_without_django_thread_asgi_request_threads_leak_their_connections():
    """Django alone: each request's thread dies, its connection stays open."""
    counts = serve_requests("testproject.asgi:django_application")
    print(f"\nwithout the line: {counts}")
    # More sessions than the server has threads: some belong to no thread.
    assert counts.during > CLIENTS + counts.threads
    assert counts.after > counts.threads
    assert counts.after_shutdown == 0


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_with_the_wrapper_no_connection_outlives_its_thread():
    counts = serve_requests("testproject.asgi:application")
    print(f"\nwith the line: {counts}")
    # Each session is a live thread's (a request thread's or a pool worker's).
    assert counts.during <= CLIENTS + counts.threads
    assert 0 < counts.after <= counts.threads
    assert counts.after_shutdown == 0
