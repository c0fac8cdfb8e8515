"""The public API's types, pinned: checked by mypy, never run.

Each ``assert_type`` line states a type mypy must infer. Each line ending in
``# type: ignore[code]`` is a call mypy must reject with that code: strict
mode's ``warn_unused_ignores`` fails the run if the error goes away, and
``tests/test_typing.py`` checks that each one is reported for that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

from typing_extensions import assert_type

from django_thread import ThreadPoolExecutor, unit_of_work
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
