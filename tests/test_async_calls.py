"""``to_thread`` and ``sync_to_async``: drop-ins for asyncio's and asgiref's.

Each test runs the standard function and ours side by side: what they share
must hold for both, and the standard ones' leaks show what ours repair.
The fault and transaction guarantees are in ``test_faults.py`` and
``test_transactions.py``, run through both (``tests.helpers.CALLERS``).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor as StdlibPool

import asgiref.sync
import pytest
from django.core.signals import request_finished, request_started
from django.test import override_settings
from django.utils import translation

import django_thread
from django_thread.executor import ThreadPoolExecutor
from django_thread.registry import release_connections
from testproject.jobs.models import Record
from tests.helpers import (
    SHARED_POOL_PREFIX,
    database_settings,
    native_postgres_pool,
)

variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable")


def stdlib_to_thread(fn, *args):
    return asyncio.to_thread(fn, *args)


def asgiref_thread_pool(fn, *args):
    return asgiref.sync.sync_to_async(fn, thread_sensitive=False)(*args)


def our_to_thread(fn, *args):
    return django_thread.to_thread(fn, *args)


def our_thread_pool(fn, *args):
    return django_thread.sync_to_async(fn, thread_sensitive=False)(*args)


STANDARD = [stdlib_to_thread, asgiref_thread_pool]
OURS = [our_to_thread, our_thread_pool]
IDS = ["asyncio.to_thread", "asgiref.sync_to_async", "to_thread", "sync_to_async"]


@pytest.fixture(autouse=True)
def close_what_the_threads_leave(opened_connections):
    """After each test, the shared pool's workers close their connections.

    So do the standard functions' threads, by hand (nothing else would,
    until the garbage collector): closing the DB-API connection from here
    is safe, since their threads are done with it.
    """
    yield
    release_connections()
    for wrapper in opened_connections.wrappers:
        if wrapper.connection is not None:
            wrapper.connection.close()


@pytest.mark.parametrize("call", STANDARD + OURS, ids=IDS)
def test_context_variables_reach_the_call_and_so_does_the_language(call):
    def read():
        return variable.get("unset"), translation.get_language()

    async def main():
        variable.set("caller's")
        with translation.override("fr"):
            return await call(read)

    # asgiref hides a Local's value from a thread that merely inherited the
    # context (see django_thread.context); asyncio's to_thread does nothing
    # about it, so the call runs in the default language.
    language = "en" if call is stdlib_to_thread else "fr"
    assert asyncio.run(main()) == ("caller's", language)


@pytest.mark.parametrize(
    "call", [stdlib_to_thread, our_to_thread], ids=["asyncio", "ours"]
)
def test_to_thread_keeps_what_the_call_sets_to_itself_as_asyncio_does(call):
    async def main():
        variable.set("caller's")
        await call(variable.set, "the call's")
        return variable.get()

    assert asyncio.run(main()) == "caller's"


@pytest.mark.parametrize("call", STANDARD + OURS, ids=IDS)
def test_without_copy_context_context_variables_still_reach_the_call(call):
    """``DJANGO_THREAD_COPY_CONTEXT = False`` is the standard behaviour: a copy."""

    async def main():
        variable.set("caller's")
        return await call(variable.get, "unset")

    with override_settings(DJANGO_THREAD_COPY_CONTEXT=False):
        assert asyncio.run(main()) == "caller's"


@pytest.mark.parametrize(
    "call", [asgiref_thread_pool, our_thread_pool], ids=["asgiref", "ours"]
)
def test_sync_to_async_hands_what_the_call_sets_back_as_asgiref_does(call):
    async def main():
        await call(variable.set, "the call's")
        return variable.get("unset")

    assert asyncio.run(main()) == "the call's"


@pytest.mark.parametrize("call", OURS, ids=IDS[2:])
def test_each_call_is_a_unit_of_work_on_the_shared_pool(call):
    seen = []

    def note(signal):
        def receiver(sender, **kwargs):
            seen.append((signal, sender, threading.current_thread().name))

        return receiver

    started, finished = note("started"), note("finished")
    request_started.connect(started)
    request_finished.connect(finished)
    try:
        name = asyncio.run(call(lambda: threading.current_thread().name))
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)
    assert name.startswith(SHARED_POOL_PREFIX)
    assert seen == [
        ("started", ThreadPoolExecutor, name),
        ("finished", ThreadPoolExecutor, name),
    ]


@pytest.mark.parametrize("call", STANDARD + OURS, ids=IDS)
def test_a_call_closes_its_connection_per_conn_max_age(alias, call, opened_connections):
    """``CONN_MAX_AGE = 0``: the connection closes when the call ends."""

    async def main():
        await call(Record.objects.using(alias).count)
        return opened_connections.still_open(alias)

    with database_settings(alias, CONN_MAX_AGE=0):
        still_open = asyncio.run(main())
    assert opened_connections.opened(alias) == 1
    # asyncio's and asgiref's leave it open for the life of their thread.
    assert still_open == (1 if call in STANDARD else 0)


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
@pytest.mark.parametrize("call", STANDARD + OURS, ids=IDS)
def test_a_call_gives_its_pooled_connection_back(call):
    pytest.importorskip("psycopg_pool")
    with native_postgres_pool(max_size=2, timeout=2) as pool:
        pool.open(wait=True)  # its first connection ready: the pool won't grow

        async def main():
            await call(Record.objects.using("postgres").count)
            stats = pool.get_stats()
            return stats["pool_size"] - stats["pool_available"]

        checked_out = asyncio.run(main())
    # asyncio's and asgiref's threads keep it checked out: a pool slot each.
    assert checked_out == (1 if call in STANDARD else 0)


def test_sync_to_async_as_a_decorator_with_and_without_arguments():
    @django_thread.sync_to_async
    def sensitive():
        return threading.current_thread().name

    @django_thread.sync_to_async(thread_sensitive=False)
    def pooled():
        return threading.current_thread().name

    async def main():
        return await sensitive(), await pooled()

    sensitive_name, pooled_name = asyncio.run(main())
    assert not sensitive_name.startswith(SHARED_POOL_PREFIX)
    assert pooled_name.startswith(SHARED_POOL_PREFIX)


def test_sync_to_async_with_an_executor_of_the_callers_uses_it():
    with StdlibPool(max_workers=1, thread_name_prefix="callers") as pool:
        name = asyncio.run(
            django_thread.sync_to_async(
                lambda: threading.current_thread().name,
                thread_sensitive=False,
                executor=pool,
            )()
        )
    assert name.startswith("callers")


def test_thread_sensitive_sync_to_async_is_asgirefs_own():
    wrapped = django_thread.sync_to_async(len)
    assert isinstance(wrapped, asgiref.sync.SyncToAsync)
    with pytest.raises(TypeError, match="executor must not be set"):
        django_thread.sync_to_async(len, executor=StdlibPool(max_workers=1))
