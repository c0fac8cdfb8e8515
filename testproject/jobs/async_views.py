"""Views served over ASGI: the ORM from a sync view and from async views.

Each view reads the row count on the database alias named by ``?alias=``
(default: ``default``) and reports the session that read it, so that a
test can tell which connections the server used.
"""

from __future__ import annotations

import threading

from django.db import connections
from django.http import HttpRequest, JsonResponse

import django_thread
from testproject.jobs.models import Record


def _read(alias: str) -> int:
    """The server's id of the session (the DB-API connection's, on SQLite)."""
    Record.objects.using(alias).count()
    connection = connections[alias]
    if connection.vendor == "sqlite":
        return id(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid()"
            if connection.vendor == "postgresql"
            else "SELECT CONNECTION_ID()"
        )
        return int(cursor.fetchone()[0])


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
