"""System checks: bad django_thread settings fail at startup, not in a worker."""

from __future__ import annotations

import difflib
import importlib
import logging
import math
from collections.abc import Iterable
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error

PREFIX = "DJANGO_THREAD_"

#: Every boolean setting, with the id of the check that guards it.
BOOLEAN_SETTINGS = {
    "DJANGO_THREAD_SEND_SIGNALS": "django_thread.E001",
    "DJANGO_THREAD_CLOSE_ON_ERROR": "django_thread.E002",
    "DJANGO_THREAD_COPY_CONTEXT": "django_thread.E003",
    "DJANGO_THREAD_CANCEL_AT_EXIT": "django_thread.E004",
    # E005 and E006 are the unknown-setting and STOP_TIMEOUT checks below.
    "DJANGO_THREAD_PERSISTENT_CONNECTIONS": "django_thread.E007",
    "DJANGO_THREAD_LOG_UNRETRIEVED_EXCEPTIONS": "django_thread.E008",
}
UNKNOWN_SETTING = "django_thread.E005"
STOP_TIMEOUT = "django_thread.E006"
#: Every setting django_thread reads.
KNOWN_SETTINGS = [*BOOLEAN_SETTINGS, "DJANGO_THREAD_STOP_TIMEOUT"]


def unknown_name_hint(
    name: str, known: Iterable[str], kind: str, prefix: str = ""
) -> str:
    """An unknown name's hint: the known name it nearly is, else all of them.

    Names are compared without their shared ``prefix``, which would match
    anything, and whatever their case.
    """
    known_by_key = {
        known_name[len(prefix) :].casefold(): known_name for known_name in known
    }
    close = difflib.get_close_matches(
        name[len(prefix) :].casefold(), list(known_by_key), n=1
    )
    if close:
        return f"Did you mean {known_by_key[close[0]]}?"
    return f"Known {kind}: " + ", ".join(sorted(known_by_key.values())) + "."


def setting_is_valid(name: str, value: Any) -> bool:
    """The one rule for a setting's value, for the checks and for read_safely()."""
    if name == "DJANGO_THREAD_STOP_TIMEOUT":
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value
            and math.isfinite(value)
        )
    return isinstance(value, bool)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django_thread.conf import settings

    errors = []
    for name, check_id in BOOLEAN_SETTINGS.items():
        value = getattr(settings, name)
        if not setting_is_valid(name, value):
            errors.append(
                Error(
                    f"{name} must be a bool, not {type(value).__name__} ({value!r}).",
                    hint=f"Set {name} = True or {name} = False.",
                    id=check_id,
                )
            )
    timeout = settings.DJANGO_THREAD_STOP_TIMEOUT
    if not setting_is_valid("DJANGO_THREAD_STOP_TIMEOUT", timeout):
        errors.append(
            Error(
                "DJANGO_THREAD_STOP_TIMEOUT must be a number of seconds, zero "
                f"or more, not {timeout!r}.",
                hint="Set DJANGO_THREAD_STOP_TIMEOUT = 5.0, for example; "
                "exit waits at most this long for running Threads to stop.",
                id=STOP_TIMEOUT,
            )
        )
    for name in dir(settings):
        if name.startswith(PREFIX) and name not in KNOWN_SETTINGS:
            hint = unknown_name_hint(name, KNOWN_SETTINGS, "settings", PREFIX)
            errors.append(
                Error(
                    f"Unknown setting {name}: django_thread would ignore it.",
                    hint=hint,
                    id=UNKNOWN_SETTING,
                )
            )
    return errors


logger = logging.getLogger("django_thread")
#: Settings whose bad value was logged already: once per process is enough.
_reported: set[str] = set()


def read_safely(name: str) -> Any:
    """Setting ``name``; its default, with one WARNING, if its value is bad.

    Checks do not run in a plain script, a gunicorn worker or a Celery
    worker. Where a bad value would then cost work (interpreter exit, a
    fork, a worker's start), the setting is read through here.
    """
    from django_thread.conf import DjangoThreadConf, settings

    value = getattr(settings, name)
    if setting_is_valid(name, value):
        return value
    default = DjangoThreadConf._meta.defaults[name]
    if name not in _reported:
        _reported.add(name)
        logger.warning(
            "%s is %r, which is not valid (%s, see manage.py check); using "
            "the default, %r.",
            name,
            value,
            BOOLEAN_SETTINGS.get(name, STOP_TIMEOUT),
            default,
        )
    return default


#: The Tasks framework's own check of every configured backend, which runs
#: ``ThreadPoolBackend.check()`` (django_thread.E101 to E109, W101).
TASK_FRAMEWORK_CHECKS = ("django.tasks.checks", "django_tasks.checks")


def enable_task_backend_checks() -> None:
    """Make sure the Tasks framework checks the backends a project configures.

    The framework registers its check when its ``checks`` module is
    imported: Django 6 imports it with ``django.tasks``, and the 5.2
    backport in its app's ``ready()``. A project that only sets ``TASKS``
    imports neither before ``manage.py check`` runs, so bad OPTIONS would
    pass unreported. Importing the module registers the check once (a
    module runs once), whoever imports it first.
    """
    if not django_settings.is_overridden("TASKS"):
        return
    for module in TASK_FRAMEWORK_CHECKS:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return
