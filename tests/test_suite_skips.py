"""The test run itself: how it reports MariaDB it cannot use, with and without CI.

Run in a fresh pytest process, where importing the MariaDB driver fails as it
does when the ``mariadb`` extra is not installed.
"""

from __future__ import annotations

import os
import subprocess

from tests.helpers import REPO_ROOT
from tests.processes import run_python

#: Tests parametrized over every database, in several functions and files.
SOME_TESTS = ["tests/test_lifecycle.py", "tests/test_transactions.py"]


def run_without_the_driver(tmp_path, ci: str) -> subprocess.CompletedProcess[str]:
    driver = tmp_path / "MySQLdb"
    driver.mkdir()
    (driver / "__init__.py").write_text(
        "raise ImportError(\"No module named 'MySQLdb' (this test hides it)\")\n"
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(tmp_path)]),
        "CI": ci,
    }
    return run_python(
        args=["-m", "pytest", "-q", "-k", "mariadb", *SOME_TESTS],
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )


def test_mariadb_skips_are_reported_in_one_line(tmp_path):
    # Before: one SKIPPED line per test function, about 20 in a whole run.
    result = run_without_the_driver(tmp_path, ci="")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    skipped = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, output
    assert "this test hides it" in skipped[0]
    assert "pip install -e '.[test,mariadb]'" in skipped[0]
    count = int(skipped[0].split("[")[1].split("]")[0])
    assert count > 10 and f"{count} skipped" in output, output


def test_under_ci_mariadb_missing_fails_the_run(tmp_path):
    result = run_without_the_driver(tmp_path, ci="true")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "CI requires MariaDB" in output
