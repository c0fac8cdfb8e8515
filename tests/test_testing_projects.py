"""Testing support in a fresh interpreter, under pytest-django and ``manage.py test``.

``tests/projects`` is a project whose tests use a module-level pool and the
Tasks backend, run on SQLite's in-memory test database and on PostgreSQL.
On PostgreSQL its workers keep their connections (``CONN_MAX_AGE``), so the
test database can only be dropped once they released them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest
from django.db import connections

from tests import settings as test_settings
from tests.processes import run_python

ROOT = Path(__file__).resolve().parent.parent
SUITE = "tests/projects/suite.py"
UNMARKED_SUITE = "tests/projects/suite_unmarked.py"
REFUSED = "is being accessed by other users"

_databases = itertools.count()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])


def run_project(
    database: str, *command: str, **environ: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **environ,
        "PROJECT_DATABASE": database,
        "PROJECT_TEST_DATABASE": f"test_django_thread_project_{os.getpid()}_"
        f"{next(_databases)}",
    }
    try:
        return run_python(args=command, cwd=ROOT, env=env, timeout=120)
    finally:
        if database != "memory":
            # A run that failed to tear down leaves its database behind.
            with connections["postgres"].cursor() as cursor:
                cursor.execute(
                    f'DROP DATABASE IF EXISTS "{env["PROJECT_TEST_DATABASE"]}"'
                )


def pytest_command(*extra: str, suite: str = SUITE) -> list[str]:
    return [
        "-m",
        "pytest",
        "--ds",
        "tests.projects.settings",
        "--noconftest",
        "-q",
        *extra,
        suite,
    ]


MANAGE_PY_TEST = [
    "-m",
    "django",
    "test",
    "tests.projects.suite",
    "--settings",
    "tests.projects.settings",
]


@pytest.fixture(params=["memory", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory"
    if not test_settings.POSTGRES_URL:
        pytest.skip("needs DJANGO_THREAD_TEST_POSTGRES, a server both processes see")
    return test_settings.POSTGRES_URL


def test_pytest_session_passes_and_tears_down_cleanly(database):
    result = run_project(database, *pytest_command())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "4 passed" in output, output
    assert REFUSED not in output
    assert "warning" not in output, output


def test_manage_py_test_passes_and_tears_down_cleanly(database):
    result = run_project(database, *MANAGE_PY_TEST)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Ran 2 tests" in output and "\nOK" in output, output
    assert REFUSED not in output


def test_a_runner_with_the_mixin_after_discover_runner_tears_down_cleanly():
    # Before: Django's teardown_databases shadowed the mixin's, and
    # PostgreSQL refused to drop the test database.
    if not test_settings.POSTGRES_URL:
        pytest.skip("needs DJANGO_THREAD_TEST_POSTGRES, a server both processes see")
    result = run_project(
        test_settings.POSTGRES_URL,
        *MANAGE_PY_TEST,
        PROJECT_TEST_RUNNER="tests.projects.runners.MixinSecondRunner",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Ran 2 tests" in output and "\nOK" in output, output
    assert REFUSED not in output


def test_without_the_release_postgresql_refuses_to_drop_the_test_database():
    # The failure the plugin prevents: the pools' idle workers still hold
    # their connections when pytest-django drops the database.
    if not test_settings.POSTGRES_URL:
        pytest.skip("needs DJANGO_THREAD_TEST_POSTGRES, a server both processes see")
    result = run_project(
        test_settings.POSTGRES_URL,
        *pytest_command("-p", "no:django_thread", "-k", "PoolsHold"),
    )
    assert REFUSED in result.stdout + result.stderr


def test_work_in_a_test_without_database_access_logs_nothing_false():
    # A worker keeps the connection an earlier test made it open, and
    # pytest-django forbids reading its state: the units say they could not,
    # and nothing else (before: Django's receivers raised, and each unit
    # "left a transaction open" and lost its connection).
    if not test_settings.POSTGRES_URL:
        pytest.skip("needs DJANGO_THREAD_TEST_POSTGRES, a server both processes see")
    result = run_project(
        test_settings.POSTGRES_URL,
        *pytest_command(
            "-o", "log_cli=true", "--log-cli-level=INFO", suite=UNMARKED_SUITE
        ),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 passed" in output, output
    logged = [
        line
        for line in output.splitlines()
        if line.startswith(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    ]
    assert logged, output
    for line in logged:
        assert line.startswith("WARNING  django_thread:"), output
        assert (
            "could not inspect its connection to 'default' (RuntimeError: "
            "Database access not allowed" in line
        ), output
        assert line.endswith("it was left as it was"), output
