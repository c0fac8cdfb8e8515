"""fork() while workers are busy: the child never hangs in the at-fork hooks.

CPython's ``test_hang_global_shutdown_lock`` (bpo-45021): a job keeps
re-submitting itself while the main thread forks, here 200 times. Any lock
a busy worker may hold at the fork (a future's condition, the pool's locks,
the registry's) and that the child then takes hangs the child forever, and
its parent with it. Each fork's child gets a deadline; a child that misses
it is killed and reported, so a hang fails the test instead of CI.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT
from tests.processes import database_url, run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")

FORKS = 200

SCRIPT = """
import faulthandler, json, multiprocessing, os, signal, sys, threading, time
from concurrent import futures
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.process_settings"
os.environ["TESTPROJECT_DATABASE_URL"] = {url!r}
import django
django.setup()
from testproject.jobs.background import database_session, record

sys.setswitchinterval(0.0005)  # the busy chains hand the main thread the GIL sooner
POOL, HOW, FORKS, CHILD_DEADLINE = {pool!r}, {how!r}, {forks}, 10.0

if POOL == "executor":
    from django_thread import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=2)
    stop = threading.Event()

    from tests.process_tasks import chains_use_the_database

    def again():
        if chains_use_the_database():
            database_session()  # so that the worker holds a connection at the fork
        if not stop.is_set():
            executor.submit(again)

    def start_chain():
        executor.submit(again)

    def use_pool(name):
        executor.submit(record, name).result(timeout=CHILD_DEADLINE)

    def stop_chains():
        stop.set()
        executor.shutdown(wait=True)
else:
    from testproject.jobs.tasks import record as record_task
    from tests.process_tasks import again, stop

    def start_chain():
        again.enqueue()

    def use_pool(name):
        result = record_task.enqueue(name)
        deadline = time.monotonic() + CHILD_DEADLINE
        while not result.is_finished:
            assert time.monotonic() < deadline, "the child's task never ran"
            time.sleep(0.002)
            result.refresh()
        assert result.status == "SUCCESSFUL", result.errors

    def stop_chains():
        stop.set()

# Whatever the work imports is imported before the first fork: a child
# forked while a thread imports a module finds it half initialized, with
# any pool (the import system's per-module locks are not django_thread's).
use_pool("warm")
from django.db import connections
connections.close_all()  # the forking thread's own, as the README says
start_chain()
start_chain()  # two chains: both workers busy at most forks
hung, failed = [], []
for i in range(FORKS):
    if HOW == "process_pool":  # CPython's test, as written
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(1, mp_context=fork) as workers:
            try:
                workers.submit(tuple).result(timeout=CHILD_DEADLINE)
            except futures.TimeoutError:  # not yet the builtin on Python 3.10
                hung.append(i)
                for process in multiprocessing.active_children():
                    process.kill()
                break
        continue
    child = os.fork()
    if child == 0:  # the child uses the pool too, then leaves without exit hooks
        # Where a hung child waits, on stderr (lock-free), before it is killed.
        faulthandler.dump_traceback_later(CHILD_DEADLINE / 2)
        code = 1
        try:
            use_pool("child")
            code = 0
        except BaseException as error:  # said lock-free: no traceback module
            os.write(2, f"child {{i}}: {{error!r}}\\n".encode())
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_DEADLINE
    while not (waited := os.waitpid(child, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            hung.append(i)
            break
        time.sleep(0.001)
    else:
        if os.waitstatus_to_exitcode(waited[1]) == 0:
            continue
        failed.append(i)
    break
stop_chains()
print(json.dumps({{"hung": hung, "failed": failed}}), flush=True)
"""


@pytest.mark.parametrize("how", ["process_pool", "os_fork"])
@pytest.mark.parametrize("pool", ["executor", "tasks"])
def test_forking_while_a_job_resubmits_itself_never_hangs_the_child(alias, pool, how):
    script = textwrap.dedent(SCRIPT).format(
        root=str(REPO_ROOT),
        url=database_url(alias),
        pool=pool,
        how=how,
        forks=FORKS,
    )
    result = run_python(script, timeout=240, measured=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"hung": [], "failed": []}, (
        result.stderr
    )
    if how == "os_fork":
        # Each child ran its own unit of work on a pool of its own.
        assert Record.objects.using(alias).filter(name="child").count() == FORKS
