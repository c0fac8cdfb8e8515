"""The drop-in claim, proven by CPython's own tests of the classes we replace.

Each suite of ``tests/cpython_suites.py`` (``test.test_concurrent_futures``'s
thread-pool cases, four classes of ``test.test_threading``) runs in a
process of its own, with a timeout, and every case must pass with our
classes in place; the cases that cannot are listed, with the reason, in
``tests/cpython_suites.EXCLUDED``.

The suites need the interpreter's ``Lib/test``: pyenv builds and the
python.org installers ship it, some distribution Pythons do not, and where
it (or one of its modules) is missing the test skips and says so. Of the
pyenv builds CI uses, 3.11 and 3.12 ship a ``Lib/test`` without
``test_concurrent_futures``, so CI runs these in the tox environment
``stdlib-suites`` on Python 3.13; they are marked ``cpython_suites``, which
pytest's default options deselect elsewhere (``pytest -m cpython_suites``
runs them).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.cpython_suites import SUITES
from tests.helpers import IN_CI, REPO_ROOT
from tests.processes import run_python

pytestmark = pytest.mark.cpython_suites

#: Fewer cases than this means the selection broke (3.13.0 runs 44 and 61, 3.11.7 55 of
#: test_threading).
MINIMUM_RUN = {"concurrent_futures": 40, "threading": 50}


def _missing_modules(suite: str) -> list[str]:
    missing = []
    for module in SUITES[suite]["modules"]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(module)
    return missing


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_cpython_suite_passes_with_django_thread_classes(suite):
    missing = _missing_modules(suite)
    if missing:
        pytest.skip(
            f"{sys.executable} ships no {', '.join(missing)}: this Python's "
            "Lib/test is missing or partial (a pyenv or python.org build has it)"
        )
    process = run_python(
        args=["-m", "tests.cpython_suites", suite], cwd=REPO_ROOT, timeout=600
    )
    report = process.stderr[-20000:]
    assert process.returncode == 0, report
    counts = json.loads(process.stdout.splitlines()[-1])
    assert counts["failures"] == [], report
    assert counts["errors"] == [], report
    assert counts["unexpected_successes"] == [], report
    assert counts["expected_failures"] == [], report
    # CPython skips some cases on some builds ("need debug build"); CI's
    # Python skips none, and under CI=true none may be skipped.
    if IN_CI:
        assert counts["skipped"] == [], counts
    assert counts["run"] == counts["selected"], counts
    assert counts["run"] - len(counts["skipped"]) >= MINIMUM_RUN[suite], counts
    # The tests' own names resolved to our classes, and only to ours.
    assert counts["classes_under_test"], counts
    assert all(
        name.startswith("django_thread.") for name in counts["classes_under_test"]
    ), counts
