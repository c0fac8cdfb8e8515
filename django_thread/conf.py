"""django_thread's settings, with their defaults (prefix ``DJANGO_THREAD_``).

Imported from ``AppConfig.ready()``: appconf reads ``django.conf.settings``
when this class is created, so importing it earlier would force settings to
be configured at import time. Values are validated by system checks
(:mod:`django_thread.checks`), not here, because ``override_settings`` never
re-runs appconf's ``configure_*`` methods.

Checks do not run everywhere, though: where a bad value would cost work
and no check may have run, the setting is read with
:func:`django_thread.checks.read_safely`.
"""

from __future__ import annotations

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
