"""ASGI request threads: ``CONN_MAX_AGE`` under ASGI, with and without the line.

In process, Django's ``ASGIHandler`` (``get_asgi_application()``) is called
as a server would, alone and wrapped by :func:`django_thread.asgi.wrap`.
End to end, uvicorn serves testproject on PostgreSQL with ``CONN_MAX_AGE = 600``. 300
requests go to a sync view and to async views that reach the ORM through
``sync_to_async`` (thread-sensitive, and not) and ``to_thread``. The
server's sessions are counted by their ``application_name`` while the
requests run, once they are done, and after the server stopped, and
compared with the number of threads the server process has.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asgiref.sync
import pytest
from django.core.asgi import get_asgi_application
from django.db import connections

import django_thread.asgi
from django_thread.registry import release_connections
from testproject.jobs.models import Record
from tests.helpers import (
    REPO_ROOT,
    database_settings,
    native_postgres_pool,
    wait_for,
)
from tests.processes import ServerProcess, database_url, run_python
from tests.test_transactions import leak_atomic

REQUESTS = 300
CLIENTS = 8
VIEWS = ["sync", "thread-sensitive", "thread-pool", "to-thread"]


async def call(application, path: str) -> list[dict]:
    """One GET request, as an ASGI server makes it; the messages sent back."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    sent = []

    async def receive():
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # no disconnect: the handler cancels this

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    return sent


def sessions_of(application, alias: str, requests: int = 3) -> list[int]:
    """The session each of ``requests`` sequential requests to the sync view used."""

    async def main():
        replies = []
        for _ in range(requests):
            sent = await call(application, f"/asgi/sync/?alias={alias}")
            assert sent[0]["status"] == 200, sent
            replies.append(json.loads(sent[1]["body"])["session"])
        return replies

    return asyncio.run(main())


def test_djangos_request_threads_leave_their_connections_open(
    alias, opened_connections
):
    """Django alone: a new thread, so a new connection, per request; none closed.

    (The test keeps the wrappers referenced; in a server they stay open
    until the garbage collector breaks their reference cycles.)
    """
    with database_settings(alias, CONN_MAX_AGE=600):
        replies = sessions_of(get_asgi_application(), alias)
    assert opened_connections.opened(alias) == 3
    assert opened_connections.still_open(alias) == 3
    for wrapper in opened_connections.wrappers:
        wrapper.connection.close()  # what the garbage collector would do
    assert len(set(replies)) == 3


def test_request_threads_keep_conn_max_age_and_close_when_retired(
    alias, opened_connections
):
    application = django_thread.asgi.wrap(get_asgi_application())
    with database_settings(alias, CONN_MAX_AGE=600):
        replies = sessions_of(application, alias)
        assert len(set(replies)) == 1  # one thread, one connection, reused
        assert opened_connections.still_open(alias) == 1
        release_connections()  # the thread retires
        assert opened_connections.still_open(alias) == 0
        # The next request starts a new thread.
        assert sessions_of(application, alias, 1) != replies[:1]
    release_connections()
    assert opened_connections.still_open(alias) == 0


def test_request_threads_honour_conn_max_age_zero(alias, opened_connections):
    application = django_thread.asgi.wrap(get_asgi_application())
    with database_settings(alias, CONN_MAX_AGE=0):
        sessions_of(application, alias)
        assert opened_connections.opened(alias) == 3
        assert opened_connections.still_open(alias) == 0
    release_connections()


def test_a_thread_beyond_max_idle_retires_and_closes_its_connections(
    alias, opened_connections
):
    threads = django_thread.asgi.RequestThreads(max_idle=1)
    first, second = threads.take(), threads.take()
    with database_settings(alias, CONN_MAX_AGE=600):
        for thread in (first, second):
            thread.submit(Record.objects.using(alias).count).result()
        threads.give_back(first)
        threads.give_back(second)
        second.thread.join(5)
        assert not second.thread.is_alive()
        assert first.thread.is_alive()
        assert opened_connections.still_open(alias) == 1
        assert threads.take() is first  # the idle one serves the next request
        threads.give_back(first)
        threads.shutdown()
    assert opened_connections.still_open(alias) == 0


@pytest.mark.parametrize("ending", ["response", "exception"])
def test_a_transaction_a_request_leaks_does_not_poison_the_next(alias, ending, caplog):
    """Django's handler would close the connection but leave the wrapper in
    its atomic block: every later request on the thread would fail."""

    def create(alias, name):
        Record.objects.using(alias).create(name=name)

    async def leaky_then_fine(scope, receive, send):
        name = scope["path"]
        write = leak_atomic if name == "leaked" else create
        await asgiref.sync.sync_to_async(write)(alias, name)
        if name == "leaked" and ending == "exception":
            raise RuntimeError("the request failed")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    application = django_thread.asgi.wrap(leaky_then_fine, max_idle_threads=1)

    async def main():
        for name in ["leaked", "next-0", "next-1"]:
            try:
                await call(application, name)
            except RuntimeError:
                assert name == "leaked" and ending == "exception"

    asyncio.run(main())
    release_connections()
    names = set(Record.objects.using(alias).values_list("name", flat=True))
    assert names == {"next-0", "next-1"}
    assert "left a transaction open" in caplog.text


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_an_idle_request_thread_holds_no_slot_of_the_native_pool():
    """Even when nothing gave the connection back during the request."""
    pytest.importorskip("psycopg_pool")

    async def query_only(scope, receive, send):
        await asgiref.sync.sync_to_async(Record.objects.using("postgres").count)()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    application = django_thread.asgi.wrap(query_only)
    with native_postgres_pool(max_size=2, timeout=2) as pool:
        pool.open(wait=True)
        asyncio.run(call(application, "/"))
        [thread] = application.threads._idle
        thread.submit(int).result(5)  # the thread is done with the request
        stats = pool.get_stats()
        assert stats["pool_size"] - stats["pool_available"] == 0
        release_connections()


def test_lifespan_events_pass_through_untouched():
    seen = []

    async def inner(scope, receive, send):
        seen.append((scope["type"], threading.current_thread()))

    application = django_thread.asgi.wrap(inner)
    asyncio.run(application({"type": "lifespan"}, None, None))
    assert seen == [("lifespan", threading.main_thread())]


EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, atexit, gc, os, sys, threading
    sys.path.insert(0, {root!r})
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["TESTPROJECT_DATABASE_URL"] = "sqlite:///" + {db!r}

    opened = []

    def report():  # registered before django_thread's hook, so it runs after it
        print("still-open", sum(1 for w in opened if w.connection is not None))

    atexit.register(report)

    import django
    from django.conf import settings
    django.setup()
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 600
    from django.core.management import call_command
    from django.db.backends.signals import connection_created
    call_command("migrate", verbosity=0)
    connection_created.connect(
        lambda connection, **kw: opened.append(connection)
        if threading.current_thread() is not threading.main_thread() else None,
        weak=False,
    )

    from testproject.asgi import application
    from tests.test_asgi import call

    async def main():
        for _ in range(3):
            await call(application, "/asgi/sync/")

    asyncio.run(main())
    print("opened", len(opened), flush=True)
    if {drop!r}:
        import testproject
        del application, testproject.asgi, sys.modules["testproject.asgi"]
        gc.collect()
        from django_thread import registry
        from django_thread.asgi import RequestThreads
        assert not any(isinstance(o, RequestThreads) for o in registry.live_owners())
    """
)


@pytest.mark.parametrize("drop", [False, True], ids=["kept", "collected"])
def test_request_threads_close_their_connections_at_exit(tmp_path, drop):
    """Whether the application is still alive at exit or was collected."""
    script = EXIT_SCRIPT.format(
        root=str(REPO_ROOT), db=str(tmp_path / "exit.sqlite3"), drop=drop
    )
    result = run_python(script, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["opened", "1", "still-open", "0"], result


class Uvicorn(ServerProcess):
    """A uvicorn server on a free port, serving ``application`` (module:name)."""

    def __init__(self, application: str, application_name: str) -> None:
        super().__init__(
            [
                "uvicorn",
                "--host=127.0.0.1",
                "--port=0",
                "--lifespan=off",
                "--no-access-log",
                application,
            ],
            {
                "DJANGO_SETTINGS_MODULE": "tests.asgi_settings",
                "TESTPROJECT_DATABASE_URL": database_url("postgres"),
                "TESTPROJECT_APPLICATION_NAME": application_name,
            },
            str(REPO_ROOT),
        )
        port = self.wait_for_line(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")[0][1]
        self.base = f"http://127.0.0.1:{port}/asgi/"

    def get(self, view: str) -> dict[str, int]:
        with urllib.request.urlopen(self.base + view + "/", timeout=15) as response:
            return json.loads(response.read())

    def stop(self) -> int | None:  # type: ignore[override]
        """SIGINT (uvicorn's graceful stop), bounded."""
        return super().stop(signal.SIGINT, timeout=20)


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


def test_the_exit_report_counts_requests_in_flight():
    """Exit says how many requests are still running on request threads."""
    threads = django_thread.asgi.RequestThreads(max_idle=1)
    try:
        busy = threads.take()
        assert threads._pending_work().running == 1
        threads.give_back(busy)
        assert threads._pending_work().running == 0
    finally:
        threads.shutdown()
