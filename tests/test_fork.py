"""fork(): the child gets working pools; the parent keeps its work and sessions.

Each test runs a script in a process of its own that warms a pool, queues
work behind a blocked worker, forks, and reports from both sides which
database sessions (``pg_stat_activity``'s pid, MariaDB's connection id) did
what. The rows written are counted on the server.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
from typing import Any

import pytest
from django.db import connections

from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT, server_connection_count, wait_for
from tests.processes import database_url, run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")


def run_script(alias: str, body: str) -> dict[str, Any]:
    """Run ``body`` after Django's setup; return the JSON lines it printed."""
    script = textwrap.dedent(
        """
        import json, os, sys, threading
        sys.path.insert(0, {root!r})
        sys.stdout.reconfigure(line_buffering=True)  # nothing buffered at fork
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.process_settings"
        os.environ["TESTPROJECT_DATABASE_URL"] = {url!r}
        import django
        django.setup()

        def report(**values):
            print(json.dumps(values))
        """
    ).format(root=str(REPO_ROOT), url=database_url(alias)) + textwrap.dedent(body)
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    reports: dict[str, Any] = {}
    for line in result.stdout.splitlines():
        reports.update(json.loads(line))
    return reports


EXECUTOR = """
from django_thread import ThreadPoolExecutor
from testproject.jobs.background import record

executor = ThreadPoolExecutor(max_workers=1)  # one worker: one session to watch
warm = executor.submit(record, "parent-warm").result()
started, gate = threading.Event(), threading.Event()
running = executor.submit(lambda: (started.set(), gate.wait(10)))
started.wait(10)
queued = executor.submit(record, "queued-before-fork")  # waits behind the gate
from concurrent import futures

child = os.fork()
if child == 0:
    # The parent's futures are left pending here: completing them would
    # take their locks, which a parent thread may have held at the fork.
    for name, future in [("child_queued", queued), ("child_running", running)]:
        try:
            future.result(timeout=0.2)
            report(**{name: "completed"})
        except futures.TimeoutError:  # not yet the builtin on Python 3.10
            report(**{name: "pending"})
    sessions = {executor.submit(record, "child").result(10) for _ in range(20)}
    report(child_sessions=sorted(sessions))
    sys.exit(0)  # exit hooks run here too, in the child
_, status = os.waitpid(child, 0)
report(child_exit=os.waitstatus_to_exitcode(status))
gate.set()
# The parent's worker runs what it queued, on the session the child inherited:
# had the child closed it, the server would have ended it.
report(parent_warm=warm, parent_queued=queued.result(10))
"""

TASKS = """
import time
from testproject.jobs.tasks import record
from tests.process_tasks import hold, holding, release

def wait(result):
    deadline = time.monotonic() + 10
    while not result.is_finished and time.monotonic() < deadline:
        time.sleep(0.005)
        result.refresh()
    return result.return_value

solo = record.using(queue_name="solo")  # one worker: one session to watch
warm = wait(solo.enqueue("parent-warm"))
hold.enqueue()
holding.wait(10)
queued = solo.enqueue("queued-before-fork")  # waits behind the held task
child = os.fork()
if child == 0:
    try:
        record.get_result(queued.id)
        report(child_queued="known")
    except Exception as error:
        report(child_queued=type(error).__name__)
    sessions = {wait(solo.enqueue("child")) for _ in range(20)}
    report(child_sessions=sorted(sessions))
    sys.exit(0)  # exit hooks run here too, in the child
_, status = os.waitpid(child, 0)
report(child_exit=os.waitstatus_to_exitcode(status))
release.set()
report(parent_warm=warm, parent_queued=wait(queued))
"""


@pytest.mark.parametrize("pool", ["executor", "tasks"])
def test_forked_child_gets_a_working_pool_and_leaves_the_parents_alone(alias, pool):
    reports = run_script(alias, EXECUTOR if pool == "executor" else TASKS)
    assert reports["child_exit"] == 0
    if pool == "executor":
        assert reports["child_queued"] == reports["child_running"] == "pending"
    else:
        assert reports["child_queued"] == "TaskResultDoesNotExist"
    # The child's new worker opened a session of its own...
    assert len(reports["child_sessions"]) == 1
    assert reports["parent_warm"] not in reports["child_sessions"]
    # ...and the parent's survived the child: its worker still uses it.
    assert reports["parent_queued"] == reports["parent_warm"]
    rows = Record.objects.using(alias)
    assert rows.filter(name="child").count() == 20
    assert rows.filter(name="queued-before-fork").count() == 1  # in the parent
    if alias != "default":  # SQLite has no server to ask
        # Both processes closed every connection they opened, at exit.
        wait_for(lambda: server_connection_count(alias) == 0, "sessions to end")


@pytest.mark.django_db(transaction=True)
def test_a_worker_holds_only_its_open_connections_for_a_fork():
    """Wrappers discarded after a leaked transaction are not kept alive."""
    from django.db import transaction

    from django_thread import ThreadPoolExecutor, thread_connections

    def leak_a_transaction():
        transaction.atomic().__enter__()  # leaked: the unit discards the wrapper
        connections["default"].ensure_connection()

    def held_here():
        connections["default"].ensure_connection()
        return len(thread_connections._connected_by_thread[threading.get_ident()])

    with ThreadPoolExecutor(max_workers=1) as executor:
        for _ in range(3):
            executor.submit(leak_a_transaction).result()
        assert executor.submit(held_here).result() == 1


def test_a_fork_never_detaches_a_connection_the_forking_thread_lent(server_alias):
    """The test's own connection, connected by a worker it was lent to, stays.

    A worker that borrows a test's connection may be the thread that
    connects it; the connection is still the lender's, and the lender may
    be the thread that forks. The child keeps its copy of the socket.
    """
    reports = run_script(
        server_alias,
        """
        from django.db import connections
        from django_thread import ThreadPoolExecutor, sharing
        from django_thread.internals import driver_connection

        executor = ThreadPoolExecutor(max_workers=1)
        lent = connections["default"]
        sharing.lend()
        started, gate = threading.Event(), threading.Event()

        def connect_the_lent_connection():
            connections["default"].ensure_connection()
            started.set()
            gate.wait(10)

        running = executor.submit(connect_the_lent_connection)
        started.wait(10)
        fd = driver_connection(lent).fileno()
        pid = os.fork()
        if pid == 0:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = "closed"
            report(in_child=target)
            os._exit(0)
        os.waitpid(pid, 0)
        gate.set()
        running.result()
        sharing.end_lending()
        executor.shutdown()
        """,
    )
    assert reports["in_child"].startswith("socket:"), reports


ASGI = """
import asyncio
from testproject.asgi import application
from tests.test_asgi import call

def session():
    sent = asyncio.run(call(application, "/asgi/sync/"))
    return json.loads(sent[1]["body"])["session"]

warm = session()
child = os.fork()
if child == 0:
    report(child_sessions=sorted({session() for _ in range(5)}))
    sys.exit(0)  # exit hooks run here too, in the child
_, status = os.waitpid(child, 0)
report(child_exit=os.waitstatus_to_exitcode(status))
report(parent_warm=warm, parent_after=session())
"""


def test_forked_child_gets_new_asgi_request_threads_and_leaves_the_parents_alone(
    alias,
):
    reports = run_script(alias, ASGI)
    assert reports["child_exit"] == 0
    # One new request thread in the child, on a session of its own...
    assert len(reports["child_sessions"]) == 1
    assert reports["parent_warm"] not in reports["child_sessions"]
    # ...and the parent's request thread still uses the session it had.
    assert reports["parent_after"] == reports["parent_warm"]
    if alias != "default":
        wait_for(lambda: server_connection_count(alias) == 0, "sessions to end")


MODULE_LOCKS = """
import importlib, time
from testproject.jobs.tasks import record

# A parent thread holds each module's lock at the fork, before any pool or
# engine exists, as one creating the first of them would.
locks = {LOCKS!r}
modules = {path: importlib.import_module(path) for path, _ in locks}
held, gate = threading.Event(), threading.Event()

def hold_them():
    for path, name in locks:
        getattr(modules[path], name).acquire()
    held.set()
    gate.wait(30)

threading.Thread(target=hold_them, daemon=True).start()
held.wait(10)
child = os.fork()
if child == 0:
    free = {
        f"{path}.{name}": getattr(modules[path], name).acquire(timeout=2)
        for path, name in locks
    }
    report(child_free=free)
    for path, name in locks:
        getattr(modules[path], name).release()
    result = record.enqueue("child")  # creates the pool, under its lock
    deadline = time.monotonic() + 10
    while not result.is_finished and time.monotonic() < deadline:
        time.sleep(0.005)
        result.refresh()
    report(child_task=result.status)
    os._exit(0)
_, status = os.waitpid(child, 0)
report(child_exit=os.waitstatus_to_exitcode(status))
gate.set()
"""


@pytest.mark.django_db(transaction=True)
def test_a_forked_child_replaces_module_locks_even_before_any_pool_exists():
    """The modules' own locks are re-created in the child, pool or no pool."""
    locks = [
        ("django_thread.tasks.pools", "_pools_lock"),
        ("django_thread.tasks.durable_engine", "_engines_lock"),
        ("django_thread.async_calls", "_pool_lock"),
    ]
    reports = run_script("default", MODULE_LOCKS.replace("{LOCKS!r}", repr(locks)))
    assert reports["child_exit"] == 0
    assert reports["child_free"] == {f"{path}.{name}": True for path, name in locks}
    assert reports["child_task"] == "SUCCESSFUL"
