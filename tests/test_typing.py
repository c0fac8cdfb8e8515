"""The public API stays typed: mypy --strict on the package and its typing cases.

``tests/typing_cases.py`` pins what a user's type checker sees: ``submit``
returns ``Future[<the function's return type>]`` and checks the arguments
against the function, as typeshed does for the standard library's pool,
and ``unit_of_work`` keeps a decorated function's signature in both forms.
mypy runs in a subprocess, from the repository root, with the configuration
in ``pyproject.toml`` (``python -m mypy``). Testing the wheel
(``tests/run_installed.py``), the cases are checked against the installed
package, which mypy reads only for its ``py.typed``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.helpers import TESTING_WHEEL
from tests.processes import run_python

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "typing_cases.py"
IGNORE = "  # type: ignore["


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python(args=["-m", "mypy", *args], cwd=ROOT, timeout=None)


def test_package_and_typing_cases_pass_mypy_strict():
    # Testing the wheel, the copy of the checkout has no package to check.
    result = mypy(*([str(CASES)] if TESTING_WHEEL else []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_each_rejected_call_in_the_typing_cases_is_reported_for_its_reason(
    tmp_path,
):
    """Without their ignores, exactly the marked lines fail, with their codes."""
    expected = set()
    lines = []
    for number, line in enumerate(CASES.read_text().splitlines(), start=1):
        code, marked, reason = line.partition(IGNORE)
        if marked:
            expected.add((number, reason.rstrip("]")))
        lines.append(code)
    assert {reason for _, reason in expected} == {
        "arg-type",
        "call-arg",
        "call-overload",
    }
    stripped = tmp_path / "cases.py"
    stripped.write_text("\n".join(lines) + "\n")

    result = mypy("--config-file", str(ROOT / "pyproject.toml"), str(stripped))

    reported = {
        (int(line), reason)
        for line, reason in re.findall(
            r"^.*cases\.py:(\d+): error: .*\[([a-z-]+)\]$", result.stdout, re.M
        )
    }
    assert reported == expected, result.stdout + result.stderr
    assert (
        'Argument 2 to "submit" of "ThreadPoolExecutor" has incompatible type "str"'
        in result.stdout
    )
