"""``manage.py demo`` runs from a fresh interpreter and still shows what it claims.

The command checks its own numbers and fails when they change; these tests
run it as a user would (``python testproject/manage.py demo``, settings from
``TESTPROJECT_DATABASE_URL``) and read its table back, so that neither the
demo nor the docs' copies of its output (README.rst, docs/why.rst) can rot
unnoticed.
"""

from __future__ import annotations

import os
import re
import site
import sysconfig
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connections

from tests.processes import run_python

REPO = Path(__file__).resolve().parent.parent

#: A table row: an indented label, then one number per column.
ROW = re.compile(
    r"^   (?P<label>\S.*?)\s+(?P<stdlib>\d+)\s+(?P<recipe>\d+)\s+(?P<ours>\d+)$"
)


def postgres_url() -> str:
    """The URL of this run's PostgreSQL test database."""
    params = connections["postgres"].settings_dict
    user = quote(params["USER"] or "", safe="")
    password = f":{quote(params['PASSWORD'], safe='')}" if params["PASSWORD"] else ""
    port = f":{params['PORT']}" if params["PORT"] else ""
    host = quote(params["HOST"] or "", safe="")
    return f"postgresql://{user}{password}@{port}/{params['NAME']}?host={host}"


def table_rows(lines: list[str]) -> dict[str, tuple[int, int, int]]:
    rows = {}
    for line in lines:
        match = ROW.match(line)
        if match:
            rows[match["label"]] = (
                int(match["stdlib"]),
                int(match["recipe"]),
                int(match["ours"]),
            )
    return rows


def shown_tables() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The demo's rows as the docs show them.

    README.rst's "See it" (the SQLite table), then docs/why.rst's full SQLite
    output and its PostgreSQL table.
    """
    readme = (REPO / "README.rst").read_text()
    first = readme.split("\nSee it\n======\n")[1].split("\nDocumentation\n")[0]
    why = (REPO / "docs" / "why.rst").read_text()
    section = why.split("\nSee it: the demo\n----------------\n")[1]
    sqlite, postgresql = section.split("\nOn PostgreSQL (")
    return (
        table_rows([line[4:] for line in first.splitlines()]),
        table_rows([line[4:] for line in sqlite.splitlines()]),
        table_rows([line[4:] for line in postgresql.splitlines()]),
    )


def run_demo(database_url: str) -> tuple[str, dict[str, tuple[int, int, int]]]:
    env = {
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TESTPROJECT_DATABASE_URL": database_url,
    }
    process = run_python(
        # Dev mode and ResourceWarnings as errors: a connection the demo
        # leaves to the garbage collector shows up on stderr.
        args=["-X", "dev", "-W", "error::ResourceWarning"]
        + ["testproject/manage.py", "demo"],
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    # No unexplained log noise: every line the demo shows is on stdout.
    assert process.stderr == ""
    rows = table_rows(process.stdout.splitlines())
    # Whitespace normalised: the demo wraps its text to a fixed width.
    return " ".join(process.stdout.split()), rows


def assert_common_claims(rows: dict[str, tuple[int, int, int]]) -> None:
    # After the connections died, every stdlib job failed, and django_thread
    # only failed the first job on each of its 2 workers.
    stdlib, _, ours = rows["jobs that failed, of 6, CONN_MAX_AGE=600"]
    assert (stdlib, ours) == (6, 2)
    # Connections left open after the pool shut down.
    assert rows["CONN_MAX_AGE=0"] == (2, 0, 0)
    assert rows["CONN_MAX_AGE=600"] == (2, 2, 0)
    # The leaked atomic(): the recipe's worker is poisoned, stdlib's rows are
    # lost, django_thread commits every other job's row.
    assert rows["jobs after it that raised, of 5"] == (0, 5, 0)
    assert rows["rows of the other 9 jobs committed"] == (4, 4, 9)
    assert rows["caller's rows committed, of 2"] == (2, 2, 2)


def test_demo_on_sqlite_from_a_fresh_database(tmp_path):
    output, rows = run_demo(f"sqlite:///{tmp_path / 'demo.sqlite3'}")
    assert_common_claims(rows)
    assert "CONN_HEALTH_CHECKS=True" not in "".join(rows)  # needs a server
    assert "closes each worker's SQLite connection behind Django's back" in output
    assert "django_thread logged WARNING: A unit of work" in output
    assert "TESTPROJECT_DATABASE_URL=postgresql://" in output
    readme, why, _ = shown_tables()
    assert rows == readme
    assert rows == why


# "default" too: Django creates test databases only with their dependencies.
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_demo_on_postgresql_kills_only_its_own_connections():
    """On a server, the kill is real; the test's own connection survives it."""
    own = connections["postgres"]
    with own.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid_before = cursor.fetchone()[0]
    output, rows = run_demo(postgres_url())
    assert_common_claims(rows)
    # With health checks, the recipe and django_thread lose no job at all.
    assert rows["the same, with CONN_HEALTH_CHECKS=True"] == (6, 0, 0)
    assert "pg_terminate_backend" in output
    shown = shown_tables()[2]
    assert len(shown) == 2
    assert shown == {label: rows[label] for label in shown}
    with own.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == pid_before


def readme_outro() -> list[str]:
    """The last lines of the demo's SQLite output, as the docs show them."""
    page = (REPO / "docs" / "why.rst").read_text()
    section = page.split("\nOn PostgreSQL (")[0]
    lines = [line[4:] for line in section.rstrip().splitlines()]
    start = [n for n, line in enumerate(lines) if line.startswith("To run it")]
    return lines[start[0] :]


def test_the_postgresql_hint_is_the_readmes_and_runs_as_printed(tmp_path):
    # As README.rst's first command sets it up: a .venv in the clone, the demo
    # run with .venv/bin/python. Before: the hint said "python", and gave no
    # driver, which `pip install -e .` does not install.
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "testproject").symlink_to(REPO / "testproject")
    created = run_python(
        args=["-m", "venv", "--without-pip", str(clone / ".venv")], timeout=120
    )
    assert created.returncode == 0, created.stderr
    packages = {sysconfig.get_path("purelib"), *site.getsitepackages()}
    env = {
        # This run's packages, and the project from this checkout.
        "PYTHONPATH": os.pathsep.join([str(REPO), *sorted(packages)]),
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TESTPROJECT_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
    }
    process = run_python(
        args=["testproject/manage.py", "demo"],
        cwd=clone,
        env=env,
        python=".venv/bin/python",  # found in cwd
        timeout=120,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    lines = process.stdout.rstrip().splitlines()
    outro = lines[lines.index(readme_outro()[0]) :]
    assert outro == readme_outro()
    install, run = outro[1].split(), outro[2].split()
    # The printed interpreter is the one that ran the demo, and the package
    # named is a PostgreSQL driver Django loads.
    assert install[:4] == [".venv/bin/python", "-m", "pip", "install"]
    assert install[4].strip('"') in {"psycopg[binary]", "psycopg"}
    assert run[1:] == [".venv/bin/python", "testproject/manage.py", "demo"]
