"""Views served over ASGI: the ORM from a sync view and from async views.

Each view reads the row count and reports the server session that read
it, so that a test can tell which connections the server used.
"""

from __future__ import annotations

import threading

from django.db import connection
from django.http import HttpRequest, JsonResponse

import django_thread
from testproject.jobs.models import Record


def _read() -> int:
    Record.objects.count()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid()"
            if connection.vendor == "postgresql"
            else "SELECT 0"
        )
        return int(cursor.fetchone()[0])


def sync_view(request: HttpRequest) -> JsonResponse:
    """Django runs it on the request's thread (thread-sensitive)."""
    return JsonResponse({"session": _read()})


async def thread_sensitive_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"session": await django_thread.sync_to_async(_read)()})


async def thread_pool_view(request: HttpRequest) -> JsonResponse:
    read = django_thread.sync_to_async(_read, thread_sensitive=False)
    return JsonResponse({"session": await read()})


async def to_thread_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"session": await django_thread.to_thread(_read)})


async def threads_view(request: HttpRequest) -> JsonResponse:
    """How many threads the server process has right now."""
    return JsonResponse({"threads": threading.active_count()})
