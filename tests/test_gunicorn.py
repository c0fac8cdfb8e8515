"""End to end under ``gunicorn --preload``: pools warmed in the master work in workers.

gunicorn imports the application in the master, where both pools (a
module-level executor and the Tasks backend) run work, then forks two
workers. HTTP requests then hand work to both pools in the workers; each
request waits for its work, so a dead pool fails the request.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT, server_connection_count, wait_for
from tests.processes import ServerProcess, database_url

REQUESTS = 30  # per pool


class Server(ServerProcess):
    """A gunicorn master and its output."""

    def __init__(self, url: str) -> None:
        super().__init__(
            [
                "gunicorn",
                "--preload",
                "--workers=2",
                "--bind=127.0.0.1:0",  # a free port, which gunicorn logs
                "--graceful-timeout=20",
                "tests.gunicorn_app:application",
            ],
            {"TESTPROJECT_DATABASE_URL": url},
            str(REPO_ROOT),
        )

    def stop(self) -> int | None:  # type: ignore[override]
        """SIGTERM (graceful), bounded; SIGKILL if it does not end."""
        return super().stop(signal.SIGTERM, timeout=30)


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
