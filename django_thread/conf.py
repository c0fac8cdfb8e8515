"""django_thread's settings, with their defaults (prefix ``DJANGO_THREAD_``).

Imported from ``AppConfig.ready()``: appconf reads ``django.conf.settings``
when this class is created, so importing it earlier would force settings to
be configured at import time. Values are validated by system checks
(:mod:`django_thread.checks`), not here, because ``override_settings`` never
re-runs appconf's ``configure_*`` methods.

Checks do not run everywhere, though: a plain script, a gunicorn worker or
a Celery worker never runs them. Where a bad value would then cost work
(interpreter exit, a fork, a worker's start), the setting is read with
:func:`read_safely`, which logs the bad value once and uses the default.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from appconf import AppConf
from django.conf import settings

__all__ = ["settings", "DjangoThreadConf"]


class DjangoThreadConf(AppConf):
    #: Send ``request_started``/``request_finished`` around each unit. When
    #: False, run Django's own cleanup directly (for projects whose signal
    #: receivers assume an HTTP request).
    SEND_SIGNALS: Any = True
    #: Close a unit's connections when it raised, whatever ``CONN_MAX_AGE``
    #: says: a connection may be mid-protocol after an interrupted query.
    CLOSE_ON_ERROR: Any = True
    #: Run each unit in a copy of the submitter's ``contextvars`` context,
    #: as ``asyncio.to_thread`` does. When False, units share the worker's.
    COPY_CONTEXT: Any = True
    #: At interpreter exit, cancel work still queued in live executors
    #: instead of running it.
    CANCEL_AT_EXIT: Any = False
    #: At interpreter exit, how long (seconds, in all) to wait for running
    #: ``Thread``s to return from ``run()`` once asked to stop.
    STOP_TIMEOUT: Any = 5.0
    #: Keep connections open across units on the threads django_thread
    #: starts, until each thread ends, whatever ``CONN_MAX_AGE`` says.
    PERSISTENT_CONNECTIONS: Any = False
    #: Log, at ERROR on the ``django_thread`` logger, the exception of an
    #: executor's future that is garbage collected without anyone having
    #: retrieved it (see django_thread.future).
    LOG_UNRETRIEVED_EXCEPTIONS: Any = True

    class Meta:
        prefix = "django_thread"


logger = logging.getLogger("django_thread")
#: Settings whose bad value was logged already: once per process is enough.
_reported: set[str] = set()


def _is_valid(name: str, value: Any) -> bool:
    """The rule :func:`django_thread.checks.check_settings` enforces."""
    if name == "DJANGO_THREAD_STOP_TIMEOUT":
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value
            and math.isfinite(value)
        )
    return isinstance(value, bool)


def read_safely(name: str) -> Any:
    """Setting ``name``; its default, with one WARNING, if its value is bad.

    For paths where no system check stands between a bad value and lost
    work (see the module docstring).
    """
    from django_thread.checks import BOOLEAN_SETTINGS, STOP_TIMEOUT

    value = getattr(settings, name)
    if _is_valid(name, value):
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
