"""Which django_thread the run tests: the installed wheel's, or the checkout's.

tox's matrix environments, but the one CI measures, install the wheel and run
the suite from a copy of the checkout without ``django_thread/``
(``tests/run_installed.py``), with ``DJANGO_THREAD_TEST_WHEEL=1``. There the
package must come from site-packages, in the test run and in the fresh
interpreters tests start, and the wheel must carry what is not a top-level
module: ``py.typed``, the migrations, the ``tasks`` subpackage. Anywhere else,
as README.rst runs the suite, the checkout's package is the one tested.
"""

from __future__ import annotations

import importlib.metadata
import sysconfig
import textwrap
from pathlib import Path

import pytest
from django.core.management import call_command

import django_thread
import django_thread.tasks.backend
from tests.helpers import REPO_ROOT, TESTING_WHEEL
from tests.processes import run_python

#: What the wheel must carry besides django_thread's own modules.
CARRIED = [
    "django_thread/py.typed",
    "django_thread/migrations/__init__.py",
    "django_thread/migrations/0001_initial.py",
    "django_thread/tasks/__init__.py",
    "django_thread/tasks/backend.py",
]

IMPORTED_IN_A_FRESH_INTERPRETER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import django_thread
    print(django_thread.__file__)
    """
)


def expected_package() -> Path:
    if TESTING_WHEEL:
        return Path(sysconfig.get_path("purelib")).resolve() / "django_thread"
    return REPO_ROOT / "django_thread"


def test_the_package_is_imported_from_the_wheel_or_the_checkout():
    imported = Path(django_thread.__file__).resolve().parent
    assert imported == expected_package()
    # Tests that start an interpreter put the repository root first on its path.
    result = run_python(IMPORTED_IN_A_FRESH_INTERPRETER.format(root=str(REPO_ROOT)))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().parent == expected_package()
    if TESTING_WHEEL:
        assert not imported.is_relative_to(REPO_ROOT)


def test_the_package_carries_its_data_migrations_and_subpackages():
    package = Path(django_thread.__file__).resolve().parent
    for name in CARRIED:
        assert (package.parent / name).is_file(), name
    assert Path(django_thread.tasks.backend.__file__).resolve().parent == (
        package / "tasks"
    )
    if TESTING_WHEEL:
        # Installed from the wheel, file by file, not by an editable finder.
        distribution = importlib.metadata.distribution("django-thread")
        recorded = {str(path) for path in distribution.files or []}
        assert set(CARRIED) <= recorded, sorted(recorded)
        located = distribution.locate_file("django_thread/__init__.py")
        assert Path(str(located)).resolve() == package / "__init__.py"


@pytest.mark.django_db  # makemigrations reads the default database's history
def test_the_migrations_match_the_models():
    # Without the wheel's migrations the app has none, and a change is found.
    call_command("makemigrations", "django_thread", check=True, dry_run=True)
