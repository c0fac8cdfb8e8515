"""The examples of README.rst and docs/, run as written against testproject.

Every literal block names its language. Each Python block either runs here,
through the check below that recognises it by a line of its own and asserts
what it did (rows written, a thread stopped, a task's result), or says in
the source, right above it, why it does not (``.. not run: REASON``, see
``tests/doc_blocks.py``). Settings blocks (nothing but ``UPPER_CASE = ...``)
are put together into one project's settings, as a user following the docs
would, and that project must pass ``manage.py check``. README.rst's quick
start is a project of its own, built and run by ``tests/test_quickstart.py``.
A Python block that is none of these, or a check that matches no block,
fails the suite, so that the docs cannot drift from the code again.

Blocks run in a module of their own (``docs/...rst:LINE`` in tracebacks), so
that a task they define is module-level, as the Tasks framework requires, on
real threads and the SQLite ``default`` alias of ``tests/settings.py``, with
the ``OPTIONS`` that docs/topics/sqlite.rst gives it. A block that never
returns ends the run with every thread's stack rather than hanging it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import faulthandler
import inspect
import json
import os
import re
import sys
import threading
import types
import unittest
from collections.abc import Callable, Iterator
from importlib import import_module
from typing import Any

import django
import pytest
from django.core import mail
from django.db import connections, transaction
from django.test import RequestFactory, override_settings
from django.utils.module_loading import import_string

from django_thread import ThreadPoolExecutor
from testproject.jobs.models import Record
from testproject.jobs.tasks import record
from tests.doc_blocks import (
    DOCS,
    README,
    Block,
    all_blocks,
    doc_files,
    quick_start_blocks,
)
from tests.helpers import REPO_ROOT, database_settings, wait_for
from tests.processes import run_python

#: Seconds after which a block that still runs ends the test process.
HANG_TIMEOUT = 60

BLOCKS = all_blocks()
QUICK_START = [block for block, _ in quick_start_blocks()]


def is_settings(block: Block) -> bool:
    """Nothing but assignments to UPPER_CASE names: a settings.py excerpt."""
    return all(
        isinstance(node, ast.Assign)
        and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
        for node in ast.parse(block.code).body
    )


PYTHON = [b for b in BLOCKS if b.language == "python"]
SETTINGS = [b for b in PYTHON if is_settings(b)]

DEMO_COMMAND = (
    "python -m venv .venv && .venv/bin/python -m pip install -e . && "
    ".venv/bin/python testproject/manage.py demo"
)
DEVELOPMENT_COMMAND = (
    'python -m venv .venv && .venv/bin/python -m pip install -e ".[test]" && '
    ".venv/bin/python -m pytest"
)


def has_line(block: Block, line: str) -> bool:
    return line in (text.strip() for text in block.code.splitlines())


# The checks of the Python blocks that run, by a whole line of the block.
CHECKS: dict[str, Callable[..., None]] = {}
#: How each check gets its database: transactional, since the examples'
#: workers use the database outside any test-wide transaction, unless the
#: block itself is a test in the test's transaction.
TRANSACTIONAL: dict[Callable[..., None], bool] = {}


def checks(
    marker: str, transaction: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a check, run with ``(run_block, block, *fixtures)``."""

    def register(check: Callable[..., None]) -> Callable[..., None]:
        CHECKS[marker] = check
        TRANSACTIONAL[check] = transaction
        return check

    return register


def check_for(block: Block) -> Callable[..., None] | None:
    found = [check for marker, check in CHECKS.items() if has_line(block, marker)]
    assert len(found) <= 1, f"{block} matches several checks"
    return found[0] if found else None


def source_for_this_django(code: str) -> str:
    """The docs show Django 6's import; Django 5.2 has it from the backport.

    The docs say so next to the import (``# Django 5.2: from django_tasks
    import task``); this is the only rewriting a block gets.
    """
    if django.VERSION >= (6, 0):
        return code
    return code.replace("from django.tasks import", "from django_tasks import")


@pytest.fixture
def run_block() -> Iterator[Callable[..., dict[str, Any]]]:
    """Exec a block in a fresh module; its line numbers are its file's.

    ``into``: the namespace of an earlier block that this one continues.
    """
    names = []

    def run(block: Block, into: dict[str, Any] | None = None) -> dict[str, Any]:
        if into is not None:
            module = sys.modules[into["__name__"]]
        else:
            stem = re.sub(r"\W", "_", block.name.removesuffix(".rst"))
            name = f"{stem}_line_{block.line}"
            module = types.ModuleType(name)
            sys.modules[name] = module
            names.append(name)
        source = "\n" * (block.line - 1) + source_for_this_django(block.code)
        exec(compile(source, str(block.path), "exec"), module.__dict__)
        return module.__dict__

    yield run
    for name in names:
        sys.modules.pop(name, None)


def only(marker: str) -> Block:
    [block] = [b for b in PYTHON if has_line(b, marker)]
    return block


@contextlib.contextmanager
def docs_tasks_setting(run_block: Callable[[Block], dict[str, Any]]) -> Iterator:
    """TASKS as the Tasks backend topic sets it."""
    tasks = run_block(only('"BACKEND": "django_thread.tasks.ThreadPoolBackend",'))
    with override_settings(TASKS=tasks["TASKS"]):
        yield


@contextlib.contextmanager
def docs_sqlite_options(run_block: Callable[[Block], dict[str, Any]]) -> Iterator:
    """The test database, with the OPTIONS of docs/topics/sqlite.rst.

    The docs give them to every SQLite database that threads write to, and
    its examples need them: the executor's four workers run
    ``update_or_create()`` at once, which fails with *database is locked* in
    SQLite's default transaction mode.
    """
    databases = run_block(only('"transaction_mode": "IMMEDIATE",'))["DATABASES"]
    with database_settings("default", OPTIONS=databases["default"]["OPTIONS"]):
        yield
    # journal_mode=WAL is stored in the file: leave it as the other tests had it.
    with connections["default"].cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=DELETE")
    connections["default"].close()


@contextlib.contextmanager
def hang_guard(config: pytest.Config) -> Iterator[None]:
    """End the run, with every thread's stack, if a block never returns.

    A broken example hangs rather than fails (a loop that ignores ``stop()``
    keeps ``join()`` waiting). Output capture is suspended for the dump, as
    pytest's own debugging plugins do, or it would never be seen.
    """
    capture = config.pluginmanager.getplugin("capturemanager")

    def dump_and_exit() -> None:
        with capture.global_and_fixture_disabled():
            print(f"\nA docs block still runs after {HANG_TIMEOUT} s:")
            faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
            sys.stdout.flush()
        os._exit(1)

    watchdog = threading.Timer(HANG_TIMEOUT, dump_and_exit)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


def finished(result: Any) -> Any:
    def done() -> bool:
        result.refresh()
        return result.is_finished

    wait_for(done, f"task {result.task.name} to finish", timeout=10)
    return result


# -- The checks, in the order of the docs. -----------------------------------


@checks("class ReportThread(Thread):")
def check_report_thread(run_block, block, opened_connections):
    Record.objects.create(name="unreported", value=0)
    Record.objects.create(name="done", value=7)
    namespace = run_block(block)
    assert not namespace["thread"].is_alive()
    assert dict(Record.objects.values_list("name", "value")) == {
        "unreported": len("unreported"),
        "done": 7,
    }
    assert opened_connections.opened("default") == 1
    assert opened_connections.still_open() == 0


@checks("def update_or_create_record(name):")
def check_executor(run_block, block, opened_connections):
    Record.objects.create(name="Name 0")
    namespace = run_block(block)
    assert sorted(namespace["ids"]) == sorted(
        Record.objects.values_list("id", flat=True)
    )
    assert set(Record.objects.values_list("name", flat=True)) == {
        f"Name {i}" for i in range(5)
    }
    assert opened_connections.opened("default") >= 1
    assert opened_connections.still_open() == 0


@checks("class Poller(Thread):")
def check_poller(run_block, block, opened_connections):
    namespace = run_block(block)
    assert not namespace["poller"].is_alive()
    assert namespace["poller"].stopping.is_set()

    # The block stops its poller at once, maybe before the first batch; so
    # run one more until it has done a batch, to see the loop do its work.
    Record.objects.create(name="new", value=0)
    poller = namespace["Poller"]()
    poller.start()
    wait_for(lambda: Record.objects.filter(value=1).exists(), "a batch")
    poller.stop()
    poller.join(timeout=10)
    assert not poller.is_alive()
    assert opened_connections.still_open() == 0

    # handle() is one unit of work in whatever thread calls it: its
    # connection is closed as it returns (CONN_MAX_AGE is 0).
    consumer = threading.Thread(target=namespace["handle"], args=("message 1",))
    consumer.start()
    consumer.join()
    assert Record.objects.filter(name="message 1").exists()
    assert opened_connections.still_open() == 0


@checks("def pre_fork(server, worker):")
def check_gunicorn_pre_fork(run_block, block):
    namespace = run_block(block)
    connection = connections["default"]
    connection.ensure_connection()
    namespace["pre_fork"](server=None, worker=None)
    assert connection.connection is None


@checks("def send_welcome(user_id):")
def check_send_welcome(run_block, block):
    with docs_tasks_setting(run_block):
        namespace = run_block(block)
        request = RequestFactory().post(
            "/signup/", {"username": "ada", "email": "ada@example.com"}
        )
        response = namespace["signup"](request)
        task_id = json.loads(response.content)["task"]
        result = finished(namespace["send_welcome"].get_result(task_id))
    assert result.status == "SUCCESSFUL", result.errors
    assert result.task.queue_name == "emails"
    [message] = mail.outbox
    assert (message.subject, message.to) == ("Welcome", ["ada@example.com"])
    assert message.body == "Hello ada!"


@checks("class BumpTests(TestCase):")
def check_bump_test_case(run_block, block):
    namespace = run_block(block)
    result = unittest.TestResult()
    try:
        unittest.defaultTestLoader.loadTestsFromTestCase(namespace["BumpTests"]).run(
            result
        )
    finally:
        namespace["executor"].shutdown()
    assert result.testsRun == 1
    assert result.wasSuccessful(), result.errors + result.failures
    assert not Record.objects.exists()  # the job's write rolled back with it


@checks("def test_bump(share_test_connections):", transaction=False)
def check_pytest_bump(run_block, block, share_test_connections):
    # It continues the TestCase example: the same executor, bump and Record.
    namespace = run_block(only("class BumpTests(TestCase):"))
    namespace = run_block(block, into=namespace)
    test_bump = namespace["test_bump"]
    try:
        assert [mark.name for mark in test_bump.pytestmark] == ["django_db"]
        # Called as pytest would: in this test's django_db transaction, with
        # the plugin's fixture set up after it.
        test_bump(share_test_connections)
    finally:
        namespace["executor"].shutdown()
    assert Record.objects.get().value == 1


@checks("def wait_for(result):")
def check_wait_for_a_task(run_block, block):
    namespace = run_block(block)
    with docs_tasks_setting(run_block):
        result = namespace["wait_for"](record.enqueue("waited for"))
    assert result.status == "SUCCESSFUL", result.errors
    assert Record.objects.get().name == "waited for"


@checks("class ProjectRunner(ReleaseConnectionsMixin, DiscoverRunner):")
def check_project_runner(run_block, block):
    runner = run_block(block)["ProjectRunner"]
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        worker = executor.submit(threading.current_thread).result(10)
        runner().teardown_databases(old_config=[])  # no database to destroy
        worker.join(10)
        assert not worker.is_alive()  # the idle worker let its connections go
    finally:
        executor.shutdown()


@checks("application = django_thread.asgi.wrap(get_asgi_application())")
def check_asgi_wrap(run_block, block, opened_connections):
    from django_thread import registry
    from django_thread.asgi import RequestThreadsApplication
    from tests.test_asgi import call

    namespace = run_block(block)
    application = namespace["application"]
    assert isinstance(application, RequestThreadsApplication)
    sent = asyncio.run(call(application, "/asgi/sync/"))
    assert sent[0]["status"] == 200
    assert opened_connections.opened("default") == 1
    registry.release_connections()
    assert opened_connections.still_open() == 0


@checks("async def count_records():")
def check_async_drop_ins(run_block, block, opened_connections):
    namespace = run_block(block)
    asyncio.run(namespace["create_record"]("async"))
    assert asyncio.run(namespace["count_records"]()) == 1
    assert Record.objects.get().name == "async"
    assert opened_connections.opened("default") >= 1
    assert opened_connections.still_open() == 0  # CONN_MAX_AGE is 0


@checks('TASKS["default"]["OPTIONS"] = {')
def check_durable_settings(run_block, block):
    from django_tasks_db.models import DBTaskResult

    from django_thread.tasks.durable import DurableBackend

    # It continues the Tasks settings, in a project that has INSTALLED_APPS.
    namespace = run_block(only('"BACKEND": "django_thread.tasks.ThreadPoolBackend",'))
    namespace["INSTALLED_APPS"] = ["django_thread"]
    namespace = run_block(block, into=namespace)
    assert namespace["INSTALLED_APPS"] == ["django_thread", "django_tasks_db"]
    with override_settings(TASKS=namespace["TASKS"]):
        from django_thread.tasks.compat import task_backends

        assert isinstance(task_backends["default"], DurableBackend)
        with transaction.atomic():
            result = record.enqueue("durable")
            assert DBTaskResult.objects.filter(id=result.id).exists()
        result = finished(result)
    assert result.status == "SUCCESSFUL", result.errors
    assert Record.objects.get().name == "durable"


# -- The tests. ---------------------------------------------------------------


def test_every_literal_block_names_its_language():
    bare = [str(b) for b in BLOCKS if not b.language]
    assert not bare, (
        f"{bare}: use '.. code-block:: python' (then tests/test_readme.py runs "
        "it), or sh, text, ..."
    )


def test_every_python_block_is_run_or_says_why_not():
    unaccounted = [
        str(b)
        for b in PYTHON
        if not b.not_run
        and not is_settings(b)
        and not check_for(b)
        and b not in QUICK_START
    ]
    assert not unaccounted, (
        f"{unaccounted}: give each a check in tests/test_readme.py, or mark it "
        "'.. not run: REASON' right above it"
    )
    run_and_marked = [str(b) for b in PYTHON if b.not_run and check_for(b)]
    assert not run_and_marked, f"{run_and_marked} are marked not run, yet checked"
    stale = [m for m in CHECKS if not any(has_line(b, m) for b in PYTHON)]
    assert not stale, f"{stale} match no block of the docs any more"


def test_docs_are_found_and_the_quick_start_is_readmes():
    assert len(doc_files()) > 10
    assert {b.path for b in PYTHON} > {README}
    assert [b.section for b in QUICK_START] == ["Quick start"] * 4


def test_readme_keeps_the_demo_and_test_commands():
    """The commands a fresh machine with only Python runs, exactly as shown."""
    readme_sh = [b.code for b in BLOCKS if b.path == README and b.language == "sh"]
    assert DEMO_COMMAND in readme_sh
    assert DEVELOPMENT_COMMAND in readme_sh


#: Where README.rst links the docs: their Read the Docs address.
DOCS_URL = "https://django-thread.readthedocs.io/en/latest/"


def test_readme_links_every_docs_page_and_each_link_has_its_page():
    readme = README.read_text()
    linked = set(re.findall(re.escape(DOCS_URL) + r"([\w/-]+)\.html", readme))
    pages = {
        str(page.relative_to(DOCS).with_suffix(""))
        for page in doc_files()[1:]
        if page.name != "index.rst"
    }
    assert linked == pages, (
        f"pages not linked: {sorted(pages - linked)}; "
        f"links to no page: {sorted(linked - pages)}"
    )


def test_python_blocks_that_do_not_run_are_valid_python():
    listed = [b for b in PYTHON if b.not_run]
    assert listed  # the Celery receiver at least
    for block in listed:
        compile(block.code, str(block), "exec")


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            block,
            marks=pytest.mark.django_db(transaction=TRANSACTIONAL[check_for(block)]),
            id=str(block),
        )
        for block in PYTHON
        if check_for(block)
    ],
)
def test_docs_python_block_runs(request, run_block, block):
    check = check_for(block)
    arguments = {
        name: request.getfixturevalue(name)
        for name in inspect.signature(check).parameters
        if name not in ("run_block", "block")
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(hang_guard(request.config))
        if TRANSACTIONAL[check]:  # else the test's transaction holds the connection
            stack.enter_context(docs_sqlite_options(run_block))
        check(run_block, block, **arguments)


def project_settings_from_docs(
    run_block: Callable[[Block], dict[str, Any]],
) -> tuple[str, dict[str, Any]]:
    """A settings module: testproject's, then each settings block in turn.

    ``INSTALLED_APPS`` in a block lists what to add (``...`` and ``# ...``
    stand for the project's own apps), so it is merged into the project's.
    """
    from testproject import settings as project

    values: dict[str, Any] = {}
    apps = list(project.INSTALLED_APPS)
    for block in SETTINGS:
        for name, value in run_block(block).items():
            if name.startswith("__"):
                continue
            if name == "INSTALLED_APPS":
                for app in value:
                    # The docs mark the backport "Django 5.2 only".
                    skip = app == "django_tasks" and django.VERSION >= (6, 0)
                    if app is not Ellipsis and app not in apps and not skip:
                        apps.insert(apps.index("django_thread"), app)
            else:
                values[name] = value
    lines = ["from testproject.settings import *  # noqa", f"INSTALLED_APPS = {apps!r}"]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    return "\n".join(lines) + "\n", values


CHECK_THE_PROJECT = """
import json

import django
from django.core.management import call_command
from django.db import connection
from django.test.utils import get_runner
from django.conf import settings

django.setup()
call_command("check", fail_level="WARNING", databases=["default"])
try:
    from django.tasks import task_backends
except ImportError:
    from django_tasks import task_backends
backend = task_backends["default"]
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode")
    journal_mode = cursor.fetchone()[0]
print(json.dumps({
    "backend": type(backend).__name__,
    "backend_messages": [m.id for m in backend.check()],
    "journal_mode": journal_mode,
    "transaction_mode": connection.transaction_mode,
    "test_runner": "{0.__module__}.{0.__qualname__}".format(get_runner(settings)),
}))
"""


def test_docs_settings_pass_manage_py_check(run_block, tmp_path):
    """A project configured as the docs say passes its checks, warnings too."""
    names = {
        node.targets[0].id for block in SETTINGS for node in ast.parse(block.code).body
    }
    assert {"INSTALLED_APPS", "DATABASES", "TASKS"} <= names
    module, values = project_settings_from_docs(run_block)
    (tmp_path / "docs_settings.py").write_text(module)
    checked = run_python(
        CHECK_THE_PROJECT,
        cwd=tmp_path,  # DATABASES names a relative db.sqlite3
        env={
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
            "DJANGO_SETTINGS_MODULE": "docs_settings",
        },
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues" in checked.stdout
    found = json.loads(checked.stdout.splitlines()[-1])
    assert found["backend"] == "ThreadPoolBackend"
    assert found["backend_messages"] == []  # no W101: IMMEDIATE, a timeout
    assert found["journal_mode"] == "wal"
    assert found["transaction_mode"] == "IMMEDIATE"
    assert found["test_runner"] == values.get(
        "TEST_RUNNER", "django.test.runner.DiscoverRunner"
    )


def test_the_move_to_django_tasks_db_starts_from_the_docs_settings(run_block):
    """The diff's old side is the docs' TASKS, and its new side loads."""
    [diff] = [b for b in BLOCKS if b.language == "diff"]

    def side(dropped: str) -> dict[str, Any]:
        lines = [line[1:] for line in diff.code.splitlines() if line[:1] != dropped]
        namespace: dict[str, Any] = {}
        exec("\n".join(lines), namespace)
        return namespace

    before, after = side("+"), side("-")
    readme = run_block(only('"BACKEND": "django_thread.tasks.ThreadPoolBackend",'))
    assert before["TASKS"] == readme["TASKS"]
    assert after["INSTALLED_APPS"][-1] == "django_tasks_db"
    import_module("django_tasks_db")
    assert import_string(after["TASKS"]["default"]["BACKEND"]).__name__ == (
        "DatabaseBackend"
    )
