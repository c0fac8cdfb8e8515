"""Settings and system checks: bad input fails at startup with a hint."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from django_thread.checks import BOOLEAN_SETTINGS, check_settings
from tests.processes import run_python


def test_defaults_pass_the_checks():
    assert check_settings() == []
    # databases=[]: Django 6.1 would otherwise run backend checks that query
    # every configured server, outside any test database.
    call_command("check", databases=[])


@pytest.mark.parametrize("name", sorted(BOOLEAN_SETTINGS))
def test_non_boolean_setting_is_an_error_with_id_and_hint(name):
    with override_settings(**{name: "yes"}):
        errors = check_settings()
        assert [e.id for e in errors] == [BOOLEAN_SETTINGS[name]]
        assert "must be a bool" in errors[0].msg
        assert name in errors[0].hint
        with pytest.raises(SystemCheckError, match=BOOLEAN_SETTINGS[name]):
            call_command("check", databases=[])


def test_unknown_setting_is_an_error_that_suggests_the_right_name():
    with override_settings(DJANGO_THREAD_SEND_SIGNAL=False):
        errors = check_settings()
        assert [e.id for e in errors] == ["django_thread.E005"]
        assert errors[0].hint == "Did you mean DJANGO_THREAD_SEND_SIGNALS?"
        with pytest.raises(SystemCheckError, match="django_thread.E005"):
            call_command("check", databases=[])


def test_unknown_setting_far_from_any_lists_the_known_ones():
    with override_settings(DJANGO_THREAD_WORKERS=4):
        (error,) = check_settings()
        assert "Known settings: DJANGO_THREAD_CANCEL_AT_EXIT" in error.hint


def test_every_setting_has_a_default():
    from django.conf import settings

    for name in BOOLEAN_SETTINGS:
        assert isinstance(getattr(settings, name), bool)


def test_without_the_app_installed_the_error_names_the_fix():
    installed = [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "testproject.jobs",
    ]
    with override_settings(INSTALLED_APPS=installed):
        with pytest.raises(
            ImproperlyConfigured, match="Add 'django_thread' to INSTALLED_APPS"
        ):
            ThreadPoolExecutor()
        with pytest.raises(ImproperlyConfigured, match="INSTALLED_APPS"):
            Thread(target=print).start()
        with pytest.raises(ImproperlyConfigured, match="INSTALLED_APPS"):
            with unit_of_work():
                pass


MINIMAL_TASKS_PROJECT = """
SECRET_KEY = "x"
INSTALLED_APPS = {apps!r}
DATABASES = {{
    "default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
}}
TASKS = {{
    "default": {{
        "BACKEND": "django_thread.tasks.ThreadPoolBackend",
        "OPTIONS": {{"WORKERS": "four", "BOGUS": 1}},
    }}
}}
"""

# On Django 5.2 the backport may or may not be in INSTALLED_APPS: its app
# registers the framework's check in ready(), so both must be covered.
APP_LISTS = (
    [["django_thread"], ["django_tasks", "django_thread"]]
    if django.VERSION < (6, 0)
    else [["django_thread"]]
)


def manage_py_check(
    directory: Path, settings_module: str
) -> subprocess.CompletedProcess[str]:
    """``python -m django check`` in a new interpreter, on ``directory``'s settings."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(directory), str(Path.cwd())]),
        "DJANGO_SETTINGS_MODULE": settings_module,
    }
    return run_python(args=["-m", "django", "check"], env=env)


@pytest.mark.parametrize("apps", APP_LISTS, ids=lambda apps: "+".join(apps))
def test_manage_py_check_reports_bad_task_options_in_a_minimal_project(apps, tmp_path):
    (tmp_path / "minimal_settings.py").write_text(
        MINIMAL_TASKS_PROJECT.format(apps=apps)
    )
    checked = manage_py_check(tmp_path, "minimal_settings")
    assert checked.returncode != 0, checked.stdout + checked.stderr
    assert "django_thread.E103" in checked.stderr  # WORKERS = "four"
    assert "django_thread.E102" in checked.stderr  # BOGUS
    assert "no issues" not in checked.stdout


URLCONF_IMPORTS_TASKS_PROJECT = {
    "e109_settings.py": """
SECRET_KEY = "x"
INSTALLED_APPS = {apps!r}
DATABASES = {{
    "default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
}}
ROOT_URLCONF = "e109_urls"
TASKS = {{"default": {{"BACKEND": "django_thread.tasks.ThreadPoolBackend"}}}}
""",
    "e109_urls.py": "import e109_tasks  # noqa: F401\n\nurlpatterns = []\n",
    "e109_tasks.py": """
try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task
def add(a, b):
    return a + b
""",
}

# Without django_thread: nothing else, or on Django 5.2 the backport's app.
APPS_WITHOUT_DJANGO_THREAD = [[], ["django_tasks"]] if django.VERSION < (6, 0) else [[]]


@pytest.mark.parametrize(
    "apps", APPS_WITHOUT_DJANGO_THREAD, ids=lambda apps: "+".join(apps) or "none"
)
def test_manage_py_check_without_the_app_fails_with_e109(apps, tmp_path):
    # Before: the URLconf imported the tasks module, and with it the Tasks
    # framework's check, while the checks already ran: "no issues".
    for name, text in URLCONF_IMPORTS_TASKS_PROJECT.items():
        (tmp_path / name).write_text(text.format(apps=apps))
    checked = manage_py_check(tmp_path, "e109_settings")
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0, output
    assert "no issues" not in output
    assert "django_thread.E109" in output
    assert "Add 'django_thread' to INSTALLED_APPS" in output
