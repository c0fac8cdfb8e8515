"""Options and system checks (django_thread.E101 to E110, W101)."""

from __future__ import annotations

import io

import django
import pytest
from django.core.checks import Error
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from tests.helpers import (
    REPO_ROOT,
    database_settings,
)
from tests.processes import run_python
from tests.tasks import tasks as tm
from tests.tasks.helpers import BACKEND, finished

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


BAD_OPTIONS = [
    ({"WROKERS": 2}, "django_thread.E102"),
    ({"WORKERS": 0}, "django_thread.E103"),
    ({"WORKERS": "4"}, "django_thread.E103"),
    ({"WORKERS": True}, "django_thread.E103"),
    ({"QUEUE_WORKERS": {"nope": 1}}, "django_thread.E104"),
    ({"QUEUE_WORKERS": {"emails": 0}}, "django_thread.E104"),
    ({"QUEUE_WORKERS": ["emails"]}, "django_thread.E104"),
    ({"MAX_RESULTS": 0}, "django_thread.E105"),
    ({"RESULT_TTL": -1}, "django_thread.E106"),
    ({"RESULT_TTL": "1h"}, "django_thread.E106"),
    ({"ENQUEUE_ON_COMMIT": "yes"}, "django_thread.E107"),
    ({"DATABASE": "nope"}, "django_thread.E108"),
    ({"PERSISTENT_CONNECTIONS": "yes"}, "django_thread.E110"),
    ({"PERSISTENT_CONNECTIONS": 1}, "django_thread.E110"),
]


@pytest.mark.parametrize(("options", "check_id"), BAD_OPTIONS)
def test_bad_options_are_check_errors(configure, options, check_id):
    configure(**options)
    messages = list(tm.task_backends["default"].check())
    assert [m.id for m in messages] == [check_id]
    assert all(isinstance(m, Error) and m.hint for m in messages)
    assert messages[0].msg.startswith("Task backend 'default': ")
    with pytest.raises(ImproperlyConfigured, match=check_id) as refused:
        tm.add.enqueue(1, 1)
    assert "Task backend 'default': " in str(refused.value)


def test_with_two_backends_each_message_names_its_alias():
    bad = {"BACKEND": BACKEND, "OPTIONS": {"WORKERS": 0}}
    with override_settings(TASKS={"default": bad, "emails": bad}):
        for alias in ("default", "emails"):
            (message,) = tm.task_backends[alias].check()
            assert message.msg == (
                f"Task backend {alias!r}: WORKERS must be an int of at least 1, not 0."
            )


@pytest.mark.parametrize("key", ["workers", "WROKERS", "Worker"])
def test_an_unknown_option_near_a_known_one_suggests_it(configure, key):
    configure(**{key: 2})
    (message,) = tm.task_backends["default"].check()
    assert message.id == "django_thread.E102"
    assert message.hint == "Did you mean WORKERS?"


def test_an_unknown_option_far_from_any_lists_the_known_ones(configure):
    configure(BOGUS=1)
    (message,) = tm.task_backends["default"].check()
    assert message.hint.startswith("Known keys: DATABASE, DURABLE, ENQUEUE_ON_COMMIT, ")


def test_options_that_are_not_a_dict_are_a_check_error():
    with override_settings(
        TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": ["WORKERS"]}}
    ):
        assert [m.id for m in tm.task_backends["default"].check()] == [
            "django_thread.E101"
        ]


def test_bad_options_fail_manage_py_check(configure):
    # On Django 5.2 the backport registers its check from its AppConfig,
    # and tests.settings does not install it: importing registers it. Not
    # on Django 6, where its check would read a second, never reset, handler.
    if django.VERSION < (6, 0):
        import django_tasks.checks  # noqa: F401
    configure(WORKERS=0)
    with pytest.raises(SystemCheckError, match="django_thread.E103"):
        call_command("check", databases=[])


def test_good_options_pass_the_checks(configure):
    configure(
        WORKERS=2,
        QUEUE_WORKERS={"emails": 1},
        MAX_RESULTS=10,
        RESULT_TTL=1.5,
        ENQUEUE_ON_COMMIT=False,
        DATABASE="postgres",
        PERSISTENT_CONNECTIONS=True,
    )
    assert list(tm.task_backends["default"].check()) == []


SQLITE_WRITERS = "django_thread.W101"

#: (QUEUES, OPTIONS) that run more than one worker thread.
SEVERAL_WORKERS = [
    (["default"], {"WORKERS": 2}),
    (["default", "emails"], {"WORKERS": 1, "QUEUE_WORKERS": {"emails": 2}}),
    (["default", "emails"], {"WORKERS": 1}),  # one worker per queue, two queues
    ([], {"WORKERS": 1}),  # any queue name accepted
]


@pytest.mark.parametrize(("queues", "options"), SEVERAL_WORKERS)
def test_several_workers_on_sqlite_without_lock_wait_is_a_check_warning(
    configure, queues, options
):
    configure(queues, **options)
    with database_settings("default", OPTIONS={}):
        messages = list(tm.task_backends["default"].check())
        assert [m.id for m in messages] == [SQLITE_WRITERS]
        assert isinstance(messages[0], CheckWarning)
        assert "database is locked" in messages[0].msg
        assert "'transaction_mode': 'IMMEDIATE'" in messages[0].hint
        # A warning does not stop the pool.
        assert finished(tm.add.enqueue(1, 1)).return_value == 2


@pytest.mark.parametrize(
    "database_options",
    [
        {"transaction_mode": "IMMEDIATE"},
        {"transaction_mode": "immediate"},
        {"timeout": 5},
        {"init_command": "PRAGMA busy_timeout = 5000"},
    ],
)
def test_sqlite_waiting_for_the_write_lock_silences_the_warning(
    configure, database_options
):
    configure(["default"], WORKERS=4)
    with database_settings("default", OPTIONS=database_options):
        assert list(tm.task_backends["default"].check()) == []
    with database_settings("default", OPTIONS={}):  # the same, without the option
        assert [m.id for m in tm.task_backends["default"].check()] == [SQLITE_WRITERS]


def test_one_worker_or_another_database_needs_no_sqlite_warning(configure):
    with database_settings("default", OPTIONS={}):
        configure(["default"], WORKERS=1)
        assert list(tm.task_backends["default"].check()) == []
        configure(["default"], WORKERS=4, DATABASE="postgres")
        assert list(tm.task_backends["default"].check()) == []


def test_sqlite_warning_shows_in_manage_py_check(configure):
    if django.VERSION < (6, 0):
        import django_tasks.checks  # noqa: F401
    configure(WORKERS=2)
    with database_settings("default", OPTIONS={}):
        stderr = io.StringIO()
        call_command("check", databases=[], stderr=stderr)  # no SystemCheckError
    assert SQLITE_WRITERS in stderr.getvalue()
    assert "HINT" in stderr.getvalue()


def test_app_must_be_installed(configure):
    configure()
    from django.apps import apps

    installed = [
        a for a in (c.name for c in apps.get_app_configs()) if a != "django_thread"
    ]
    with override_settings(INSTALLED_APPS=installed):
        ids = [m.id for m in tm.task_backends["default"].check()]
        assert ids == ["django_thread.E109"]
        with pytest.raises(ImproperlyConfigured, match="INSTALLED_APPS"):
            tm.add.enqueue(1, 1)


def test_import_without_the_tasks_framework_says_what_to_install():
    code = (
        "import sys; sys.modules['django.tasks'] = None; "
        "sys.modules['django_tasks'] = None\n"
        "try:\n    import django_thread.tasks\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    result = run_python(code, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert output.startswith("ImproperlyConfigured")
    assert "pip install django-thread[tasks]" in output
