"""The public API's types, pinned: checked by mypy, never run.

Each ``assert_type`` line states a type mypy must infer. Each line ending in
``# type: ignore[code]`` is a call mypy must reject with that code: strict
mode's ``warn_unused_ignores`` fails the run if the error goes away, and
``tests/test_typing.py`` checks that each one is reported for that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from typing_extensions import assert_type

from django_thread import ThreadPoolExecutor, sync_to_async, to_thread, unit_of_work
from django_thread.asgi import RequestThreadsApplication, wrap
from django_thread.lifecycle import UnitOfWork


def job(n: int) -> str:
    return str(n)


def executor_submit_and_map(executor: ThreadPoolExecutor) -> None:
    assert_type(executor.submit(job, 1), Future[str])
    assert_type(executor.submit(job, n=1), Future[str])
    assert_type(executor.map(job, [1, 2]), Iterator[str])
    executor.submit(job, "wrong")  # type: ignore[arg-type]
    executor.submit(job)  # type: ignore[call-arg]
    executor.submit(job, 1, 2)  # type: ignore[call-arg]


@unit_of_work
def bare(n: int) -> str:
    return str(n)


@unit_of_work()
def called(n: int) -> str:
    return str(n)


@unit_of_work(sender=ThreadPoolExecutor)
def with_sender(n: int) -> str:
    return str(n)


def unit_of_work_forms() -> None:
    assert_type(bare(1), str)
    assert_type(called(1), str)
    assert_type(with_sender(1), str)
    bare("wrong")  # type: ignore[arg-type]
    called("wrong")  # type: ignore[arg-type]
    with unit_of_work() as unit:
        assert_type(unit, UnitOfWork)
    unit_of_work("a sender")  # type: ignore[call-overload]


async def to_thread_as_asyncio_types_it() -> None:
    assert_type(await to_thread(job, 1), str)
    assert_type(await to_thread(job, n=1), str)
    assert_type(await asyncio.to_thread(job, 1), str)
    await to_thread(job, "wrong")  # type: ignore[arg-type]
    await to_thread(job)  # type: ignore[call-arg]


@sync_to_async
def sensitive(n: int) -> str:
    return str(n)


@sync_to_async(thread_sensitive=False)
def pooled(n: int) -> str:
    return str(n)


async def sync_to_async_forms() -> None:
    assert_type(await sync_to_async(job)(1), str)
    assert_type(await sync_to_async(job, thread_sensitive=False)(n=1), str)
    assert_type(await sensitive(1), str)
    assert_type(await pooled(1), str)
    await pooled("wrong")  # type: ignore[arg-type]


async def django_application(scope: Any, receive: Any, send: Any) -> None:
    pass


def asgi_wrap() -> None:
    assert_type(wrap(django_application), RequestThreadsApplication)
