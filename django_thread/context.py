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
from collections.abc import Callable
from typing import Any

from django.conf import settings as django_settings
from django.utils import timezone, translation


class Snapshot:
    """The submitter's context, language and time zone at submit time."""

    __slots__ = ("context", "language", "timezone")

    def __init__(self) -> None:
        self.context = contextvars.copy_context()
        language = translation.get_language()
        # Only an explicitly active language or time zone needs carrying:
        # the worker falls back to the same defaults by itself.
        self.language: str | None | bool = (
            False if language == django_settings.LANGUAGE_CODE else language
        )
        current = timezone.get_current_timezone()
        self.timezone = None if current == timezone.get_default_timezone() else current


def capture() -> Snapshot | None:
    """A snapshot, or None when ``DJANGO_THREAD_COPY_CONTEXT`` is off."""
    from django_thread.conf import settings

    return Snapshot() if settings.DJANGO_THREAD_COPY_CONTEXT else None


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
