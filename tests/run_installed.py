"""Run the test suite on the installed django_thread, not the checkout's.

``python tests/run_installed.py DIR [PYTEST_ARGS...]`` copies the checkout
into DIR, less its ``django_thread/`` package, and runs ``python -m pytest
PYTEST_ARGS`` there (test paths relative to the checkout, as usual). Every
process the suite starts finds ``tests`` and ``testproject`` through DIR
(pytest's ``pythonpath = ["."]``, ``tests.helpers.REPO_ROOT``), where no
``django_thread`` is, so the package can only come from site-packages: tox's
matrix environments install the wheel there (``tox.ini``), and
``tests/test_installed.py`` checks that the run imports it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent

#: Left out at the top of the checkout: the package, and what is not the
#: project's (git, tox's and the build's output).
TOP_LEVEL_LEFT_OUT = {"django_thread", "build", "dist"}


def copy_checkout(target: Path) -> None:
    """The checkout, less the package, dot directories, caches and virtualenvs."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == CHECKOUT
        return {
            name
            for name in names
            if (top and (name in TOP_LEVEL_LEFT_OUT or name.startswith(".")))
            or name == "__pycache__"
            or name.endswith(".egg-info")
            or (Path(directory, name) / "pyvenv.cfg").exists()
            or Path(directory, name).resolve() == target
        }

    shutil.copytree(CHECKOUT, target, ignore=ignore, symlinks=True)


def main(target: str, *pytest_args: str) -> int:
    suite = Path(target).resolve()
    copy_checkout(suite)  # FileExistsError rather than a copy over old files
    assert not (suite / "django_thread").exists()
    command = [sys.executable, "-m", "pytest", *pytest_args]
    print(f"{suite}$ {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=suite).returncode


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
