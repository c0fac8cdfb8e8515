"""What a unit of work inherits from the code that submitted it.

Like ``asyncio.to_thread``, a unit runs in a copy of the submitter's
``contextvars`` context, taken when the work is submitted: context variables
are visible, and whatever the unit sets dies with its copy instead of
leaking into the next unit on the same worker.

A copy alone does not carry Django's active language and time zone: they
live in ``asgiref.local.Local`` objects, and asgiref (3.13 does) tags
their data with the thread that set it and hides it from any other thread
that merely inherited the context. So the snapshot also records both, and
activates them inside the copy in the worker.
"""

from __future__ import annotations

import contextvars
import operator
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from asgiref.local import Local
from django.conf import settings as django_settings
from django.utils import timezone, translation


class Snapshot:
    """The submitter's context, language and time zone at submit time."""

    __slots__ = ("context", "language", "timezone")

    def __init__(
        self,
        context: contextvars.Context,
        language: str | None | bool,
        timezone: Any,
    ) -> None:
        self.context = context
        #: False: the default language; None: translations deactivated.
        self.language = language
        #: None: the default time zone.
        self.timezone = timezone


def _active_language_and_timezone() -> tuple[str | None | bool, Any]:
    """This thread's language and time zone, when not the defaults."""
    language = translation.get_language()
    # Only an explicitly active language or time zone needs carrying: the
    # worker falls back to the same defaults by itself.
    current = timezone.get_current_timezone()
    return (
        False if language == django_settings.LANGUAGE_CODE else language,
        None if current == timezone.get_default_timezone() else current,
    )


@cache
def locals_replace_their_value_on_write() -> bool:
    """Whether every write to an ``asgiref.local.Local`` sets a new context value.

    Probed once, on a Local of its own in an empty context: a write
    (``activate()``, ``deactivate()``) must store a new object in the
    context, not change the stored one in place. asgiref 3.13 does; where
    it does not, :func:`capture` reads the language and time zone on every
    submit.
    """

    def probe() -> bool:
        local = Local()
        values = []
        local.value = 1
        values.append(tuple(contextvars.copy_context().values()))
        local.value = 2
        values.append(tuple(contextvars.copy_context().values()))
        del local.value
        values.append(tuple(contextvars.copy_context().values()))
        return all(len(v) == 1 for v in values) and len({id(v[0]) for v in values}) == 3

    return contextvars.Context().run(probe)


#: Per submitting thread: the context values at the last capture, and the
#: language and time zone read then.
_last = threading.local()


def capture() -> Snapshot | None:
    """A snapshot, or None when ``DJANGO_THREAD_COPY_CONTEXT`` is off.

    Reading the active language and time zone goes through two
    ``asgiref.local.Local`` lookups, each dearer than the rest of the
    snapshot. Both live in the context (a non-thread-critical Local keeps
    its data in a context variable), so while the submitter's context holds
    the very same values as at its previous submit, they cannot have
    changed, and the previous reading is reused; this holds only where a
    write replaces the value (:func:`locals_replace_their_value_on_write`).
    A later change of ``LANGUAGE_CODE`` or ``TIME_ZONE`` cannot make a
    reading stale: "the default" is resolved in the worker when the unit
    runs, and an explicit language or time zone means itself.
    """
    from django_thread.conf import settings

    if not settings.DJANGO_THREAD_COPY_CONTEXT:
        return None
    context = contextvars.copy_context()
    values = tuple(context.values())
    last = getattr(_last, "reading", None)
    if (
        last is not None
        and len(last[0]) == len(values)
        and all(map(operator.is_, last[0], values))
    ):
        return Snapshot(context, last[1], last[2])
    language, zone = _active_language_and_timezone()
    if locals_replace_their_value_on_write():
        _last.reading = (values, language, zone)
    return Snapshot(context, language, zone)


def _activate_and_call(
    snapshot: Snapshot, fn: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    if snapshot.language is None:
        translation.deactivate_all()
    elif snapshot.language is not False:
        translation.activate(snapshot.language)  # type: ignore[arg-type]
    if snapshot.timezone is not None:
        timezone.activate(snapshot.timezone)
    return fn(*args)


def call_in(snapshot: Snapshot | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` in the snapshot's context (or in the current one)."""
    if snapshot is None:
        return fn(*args)
    return snapshot.context.run(_activate_and_call, snapshot, fn, args)
