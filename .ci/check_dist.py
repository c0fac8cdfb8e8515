"""Build the sdist and the wheel, and check what a user would install.

Run by ``tox -e package`` as ``python .ci/check_dist.py OUTDIR``:

- ``python -m build`` makes the sdist, then the wheel from the sdist, so a
  file the sdist forgets (README.rst, setup.cfg) fails the build;
- ``twine check --strict`` renders README.rst as PyPI would and fails on any
  rendering error or warning;
- the wheel holds the package and its ``py.typed``, and no ``tests/`` or
  ``testproject/``;
- CHANGELOG.rst, which users read beside the description, renders the same
  way (readme_renderer, which twine uses).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import readme_renderer.rst

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {"django_thread/__init__.py", "django_thread/py.typed"}
FORBIDDEN_TOP_LEVEL = {"tests", "testproject", "benchmarks"}


def run_module(*args: str) -> bool:
    """``python -m ARGS`` in this interpreter; False (and why) when it fails."""
    status = subprocess.run([sys.executable, "-m", *args]).returncode
    if status:
        print(f"python -m {' '.join(args[:2])} ... failed: exit {status}")
    return status == 0


def changelog_renders() -> bool:
    warnings = io.StringIO()
    path = ROOT / "CHANGELOG.rst"
    rendered = readme_renderer.rst.render(path.read_text(), stream=warnings)
    if rendered is None:
        print(f"{path.name} does not render:\n{warnings.getvalue()}")
    return rendered is not None


def main(outdir: Path) -> int:
    shutil.rmtree(outdir, ignore_errors=True)
    if not run_module("build", "--outdir", str(outdir), str(ROOT)):
        return 1
    dists = sorted(outdir.iterdir())
    if not run_module("twine", "check", "--strict", *map(str, dists)):
        return 1
    [wheel] = [path for path in dists if path.suffix == ".whl"]
    names = set(zipfile.ZipFile(wheel).namelist())
    problems = [f"missing {name}" for name in sorted(REQUIRED - names)]
    problems += [
        f"ships {name}"
        for name in sorted(names)
        if name.split("/", 1)[0] in FORBIDDEN_TOP_LEVEL
    ]
    for problem in problems:
        print(f"{wheel.name}: {problem}")
    if not problems:
        print(f"{wheel.name}: {len(names)} files, no tests/ or testproject/")
    return 0 if changelog_renders() and not problems else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
