"""Parity with a distributed backend: django-tasks-db gives the same results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import (
    IN_CI,
    REPO_ROOT,
)
from tests.tasks import parity_scenario
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
def test_same_results_as_django_tasks_db(configure, tmp_path, durable):
    """The scenario gives django-tasks-db's results here, in memory or DURABLE."""
    try:
        import django_tasks_db  # noqa: F401
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI needs django-tasks-db for the parity test: {exc}")
        pytest.skip(f"django-tasks-db is not installed: {exc}")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.tasks.parity_scenario",
            str(tmp_path / "tasks.sqlite3"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    [line] = [
        line
        for line in completed.stdout.splitlines()
        if line.startswith(parity_scenario.PARITY_MARKER)
    ]
    theirs = json.loads(line[len(parity_scenario.PARITY_MARKER) :])

    if durable:
        configure(WORKERS=1, DURABLE=True)
    else:
        configure(WORKERS=1)
    ids = parity_scenario.run_scenario()
    backend = tm.task_backends["default"]
    assert (type(backend).__name__ == "DurableBackend") is durable
    for result_id in ids.values():
        finished(backend.get_result(result_id))
    ours = json.loads(json.dumps(parity_scenario.summarize_all(ids)))
    assert ours == theirs
    assert theirs["echo"]["return_value"]["args"][1] == {"1": "one", "nested": [3, 4]}
    assert theirs["fail"]["errors"] == ["builtins.ValueError"]
