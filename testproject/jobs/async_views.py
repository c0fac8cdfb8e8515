"""Views served over ASGI: the ORM from a sync view and from async views.

Each view reads the row count on the database alias named by ``?alias=``
(default: ``default``) and reports the session that read it, so that a
test can tell which connections the server used.
"""

from __future__ import annotations

import threading

from django.http import HttpRequest, JsonResponse

import django_thread
from testproject.jobs.background import database_session
from testproject.jobs.models import Record


def _read(alias: str) -> int:
    """Query through the ORM; the session that ran it."""
    Record.objects.using(alias).count()
    return database_session(alias)


def _alias(request: HttpRequest) -> str:
    return request.GET.get("alias", "default")


def sync_view(request: HttpRequest) -> JsonResponse:
    """Django runs it on the request's thread (thread-sensitive)."""
    return JsonResponse({"session": _read(_alias(request))})


async def thread_sensitive_view(request: HttpRequest) -> JsonResponse:
    read = django_thread.sync_to_async(_read)
    return JsonResponse({"session": await read(_alias(request))})


async def thread_pool_view(request: HttpRequest) -> JsonResponse:
    read = django_thread.sync_to_async(_read, thread_sensitive=False)
    return JsonResponse({"session": await read(_alias(request))})


async def to_thread_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"session": await django_thread.to_thread(_read, _alias(request))}
    )


async def threads_view(request: HttpRequest) -> JsonResponse:
    """How many threads the server process has right now."""
    return JsonResponse({"threads": threading.active_count()})
