"""Parity with distributed backends: django-tasks-db and RQ give the same results.

One scenario (``parity_scenario.py``) of the tasks in ``tasks.py`` runs through
four backends, and only the settings change between them:

1. ``ThreadPoolBackend`` in memory, in this process;
2. ``ThreadPoolBackend`` with ``DURABLE``, in this process;
3. django-tasks-db's ``DatabaseBackend``, run by its ``db_worker`` command;
4. django-tasks-rq's ``RQBackend`` on Redis, run by django-rq's ``rqworker``
   in a process of its own, which forks a work horse for each job.
"""

from __future__ import annotations

import json
import os
import secrets
import textwrap
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.helpers import (
    IN_CI,
    REPO_ROOT,
)
from tests.processes import run_python
from tests.tasks import parity_scenario
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)

#: The Redis server of the RQ leg; each run claims an empty database on it,
#: from the URL's database number (1 when it names none) up.
REDIS_URL = os.environ.get("DJANGO_THREAD_TEST_REDIS") or "redis://127.0.0.1:6379"

#: Scenario entries where RQ gives another observable result, and why. RQ
#: pickles a job's arguments and its return value (django-tasks-rq hands
#: ``create_job`` the arguments as enqueued, and stores what the task
#: returned; RQ's JSON serializer is no way out, as ``get_result`` fetches
#: jobs with the default one). The test checks each difference below, so
#: that a django-tasks-rq which normalises to JSON shows up as a failure
#: here, and the entry can come back into the comparison.
RQ_DIFFERENCES = {
    "echo": "the task receives the tuple, the int key and the bytes it was "
    "enqueued with, where the other backends hand it their JSON forms "
    "(a list, a str key, a str)",
    "return": "get_result() gives back the tuple and the int key the task "
    "returned, not their JSON forms",
    "unserializable": "a set return value, which JSON refuses (the task "
    "fails with TypeError elsewhere), pickles and succeeds",
}


def run_leg(call: str, marker: str, timeout: float = 120) -> Any:
    """Run ``parity_scenario.<call>`` in a fresh interpreter; what it printed."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from tests.tasks import parity_scenario
        parity_scenario.{call}
        """
    )
    completed = run_python(script, timeout=timeout)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    if not marker:
        return None
    [line] = [line for line in completed.stdout.splitlines() if line.startswith(marker)]
    return json.loads(line[len(marker) :])


def our_summary(configure: Any, durable: bool) -> dict[str, Any]:
    """The scenario on ``ThreadPoolBackend`` in this process, summarised."""
    if durable:
        configure(WORKERS=1, DURABLE=True)
    else:
        configure(WORKERS=1)
    ids = parity_scenario.run_scenario()
    backend = tm.task_backends["default"]
    assert (type(backend).__name__ == "DurableBackend") is durable
    for result_id in ids.values():
        finished(backend.get_result(result_id))
    # The same JSON trip as the other legs' summaries.
    summary: dict[str, Any] = json.loads(json.dumps(parity_scenario.summarize_all(ids)))
    return summary


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
def test_same_results_as_django_tasks_db(configure, tmp_path, durable):
    """The scenario gives django-tasks-db's results here, in memory or DURABLE."""
    try:
        import django_tasks_db  # noqa: F401
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI needs django-tasks-db for the parity test: {exc}")
        pytest.skip(f"django-tasks-db is not installed: {exc}")
    db_path = str(tmp_path / "tasks.sqlite3")
    theirs = run_leg(f"main({db_path!r})", parity_scenario.PARITY_MARKER)

    ours = our_summary(configure, durable)
    assert ours == theirs
    assert theirs["echo"]["return_value"]["args"][1] == {"1": "one", "nested": [3, 4]}
    assert theirs["fail"]["errors"] == ["builtins.ValueError"]


CLAIM = """
if redis.call('DBSIZE') == 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', 600)
    return 1
end
return 0
"""


@pytest.fixture
def redis_database() -> Iterator[str]:
    """The URL of an empty Redis database, this test's alone, flushed after.

    A database is claimed by writing a key into it while it is empty, in one
    script, so parallel runs never share one; it is flushed afterwards (it
    held nothing else), and a crashed run's claim lapses after 10 minutes.
    """
    try:
        import django_tasks_rq  # noqa: F401
        import redis
    except ImportError as exc:
        reason = (
            f"django-tasks-rq is not installed ({exc}): the test extra has it, "
            "pip install -e '.[test]'"
        )
        if IN_CI:
            pytest.fail(f"CI cannot run the RQ leg: {reason}")
        pytest.skip(reason)
    parts = urlsplit(REDIS_URL)
    first = int(parts.path.strip("/") or 1)
    try:
        server = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        server.ping()
    except redis.RedisError as exc:
        reason = (
            f"Redis at {REDIS_URL} is unreachable ({exc}): start one "
            "(.ci/run does) or name one in DJANGO_THREAD_TEST_REDIS"
        )
        if IN_CI:
            pytest.fail(f"CI cannot run the RQ leg: {reason}")
        pytest.skip(reason)
    server.close()
    token = f"django-thread parity test, pid {os.getpid()}, {secrets.token_hex(4)}"
    for number in range(first, 16):
        url = urlunsplit(parts._replace(path=f"/{number}"))
        client = redis.Redis.from_url(url)
        try:
            if client.eval(CLAIM, 1, "django-thread-parity-claim", token):
                break
        except redis.ResponseError:  # the server has fewer databases
            pass
        client.close()
    else:
        pytest.fail(f"no empty Redis database from {first} to 15 at {REDIS_URL}")
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def test_same_results_on_rq(configure, tmp_path, redis_database):
    """The scenario gives RQ's results here, less RQ_DIFFERENCES, checked apart."""
    args = f"{str(tmp_path / 'tasks.sqlite3')!r}, {redis_database!r}"
    ids = run_leg(f"rq_enqueue({args})", parity_scenario.IDS_MARKER)
    run_leg(f"rq_work({args})", "")
    theirs = run_leg(f"rq_summarize({args}, {ids!r})", parity_scenario.PARITY_MARKER)

    ours = our_summary(configure, durable=False)
    differing = {label: theirs.pop(label) for label in RQ_DIFFERENCES}
    for label in RQ_DIFFERENCES:
        del ours[label]
    assert ours == theirs
    assert theirs["fail"]["errors"] == ["builtins.ValueError"]
    assert theirs["context"]["return_value"]["knows_its_workers"] is True

    # The differences, as RQ_DIFFERENCES gives them.
    assert differing["echo"]["return_value"]["types"] == ["tuple", "dict", "bytes"]
    assert differing["return"]["return_value_is_json"] is False
    assert differing["return"]["return_value"] == [[1, 2], {"1": "one"}]
    assert differing["unserializable"]["status"] == "SUCCESSFUL"
    assert differing["unserializable"]["return_value"] == "{1, 2}"
