"""Fire-and-forget work never fails unseen: an unretrieved failure is logged."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import textwrap
import threading

import pytest
from django.db import DatabaseError, connections
from django.test import override_settings

from django_thread import ThreadPoolExecutor, unit_of_work
from django_thread.future import log_unretrieved
from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT
from tests.processes import run_python

NEVER_RETRIEVED = "was never retrieved"


def fail(value=None):
    raise ValueError(value)


def unretrieved_records(caplog):
    """Collect what is garbage, log it as exit would, return the log records."""
    gc.collect()
    log_unretrieved()
    return [
        record
        for record in caplog.records
        if record.name == "django_thread" and NEVER_RETRIEVED in record.getMessage()
    ]


def test_failed_query_of_a_discarded_future_is_logged_once_with_traceback(
    alias, caplog
):
    def save_then_query_a_missing_table():
        Record.objects.using(alias).create(name="before the failure")
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(save_then_query_a_missing_table)  # the future is dropped
    # No gc.collect(), no explicit logging: the worker logged it.
    (record,) = [r for r in caplog.records if NEVER_RETRIEVED in r.getMessage()]
    assert record.name == "django_thread"
    assert record.levelno == logging.ERROR
    assert "save_then_query_a_missing_table" in record.getMessage()
    assert "ThreadPoolExecutor-" in record.getMessage()  # the worker's name
    assert issubclass(record.exc_info[0], DatabaseError)
    assert "no_such_table" in caplog.text  # the traceback and the message
    assert "save_then_query_a_missing_table" in caplog.text
    assert unretrieved_records(caplog) == [record]  # once, not again
    assert Record.objects.using(alias).filter(name="before the failure").exists()


def test_failure_of_a_future_dropped_later_is_logged_once(caplog):
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(fail, "held, then dropped")
        concurrent.futures.wait([future])
    assert unretrieved_records(caplog) == []  # still held: someone may look
    del future
    (record,) = unretrieved_records(caplog)
    assert str(record.exc_info[1]) == "held, then dropped"
    assert len(unretrieved_records(caplog)) == 1


def _by_result(future):
    with pytest.raises(ValueError):
        future.result()


def _by_exception(future):
    assert isinstance(future.exception(), ValueError)


def _by_done_callback(future):
    seen = []
    future.add_done_callback(seen.append)
    assert seen == [future]


def _by_wait_then_result(future):
    done, _ = concurrent.futures.wait([future])
    with pytest.raises(ValueError):
        done.pop().result()


def _by_as_completed_then_exception(future):
    (completed,) = concurrent.futures.as_completed([future])
    assert isinstance(completed.exception(), ValueError)


def _by_asyncio(future):
    async def await_it():
        with pytest.raises(ValueError):
            await asyncio.wrap_future(future)

    asyncio.run(await_it())


@pytest.mark.parametrize(
    "retrieve",
    [
        _by_result,
        _by_exception,
        _by_done_callback,
        _by_wait_then_result,
        _by_as_completed_then_exception,
        _by_asyncio,
    ],
    ids=lambda f: f.__name__.removeprefix("_by_"),
)
def test_a_retrieved_failure_is_not_logged(retrieve, caplog):
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(fail)
        concurrent.futures.wait([future])
        retrieve(future)  # each asserts that it saw the failure
    del future
    assert unretrieved_records(caplog) == []


@pytest.mark.parametrize("look", ["wait", "as_completed"])
def test_waiting_alone_does_not_retrieve_the_failure(look, caplog):
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(fail, look)
        if look == "wait":
            assert concurrent.futures.wait([future]) == ({future}, set())
        else:
            assert list(concurrent.futures.as_completed([future])) == [future]
    del future
    (record,) = unretrieved_records(caplog)
    assert str(record.exc_info[1]) == look


def test_map_logs_the_failures_its_iteration_never_reached(caplog):
    executor = ThreadPoolExecutor(max_workers=1)
    results = executor.map(fail, [0, 1, 2])
    executor.shutdown(wait=True)  # every call has failed by now
    with pytest.raises(ValueError, match="0"):
        next(results)
    del results  # closing the iterator: 1 and 2 are done, nothing cancels them
    records = unretrieved_records(caplog)
    assert sorted(str(record.exc_info[1]) for record in records) == ["1", "2"]


def test_a_timed_out_result_does_not_count_as_retrieved(caplog):
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(lambda: release.wait(10) and fail("late"))
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=0.01)
        release.set()
        concurrent.futures.wait([future])
    del future
    (record,) = unretrieved_records(caplog)
    assert str(record.exc_info[1]) == "late"


def test_a_cancelled_future_is_not_logged(caplog):
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as executor:
        running = executor.submit(release.wait, 10)
        queued = executor.submit(fail)
        assert queued.cancel()
        release.set()
        assert running.result() is True
    del queued
    assert unretrieved_records(caplog) == []


def test_the_setting_turns_it_off(caplog):
    with override_settings(DJANGO_THREAD_LOG_UNRETRIEVED_EXCEPTIONS=False):
        with ThreadPoolExecutor(max_workers=1) as executor:
            executor.submit(fail)
    assert unretrieved_records(caplog) == []


def test_futures_are_still_concurrent_futures():
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(int, "1")
        assert isinstance(future, concurrent.futures.Future)
        assert future.result() == 1


EXIT_SCRIPT = textwrap.dedent(
    """
    import gc, os, sys
    sys.path.insert(0, {root!r})
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    import django
    django.setup()
    from concurrent.futures import wait
    from django_thread import ThreadPoolExecutor

    def fail(what):
        raise ValueError(what)

    executor = ThreadPoolExecutor(max_workers=1)
    # Alive until the interpreter is torn down, after the last atexit hook.
    held_to_the_end = executor.submit(fail, "held to the end")
    wait([held_to_the_end])
    inherited = executor.submit(fail, "failed before the fork")
    wait([inherited])
    if {fork} and os.fork() == 0:
        # The parent reports it; a forked child's copy stays quiet.
        del inherited
        gc.collect()
        sys.exit(0)
    if {fork}:
        os.wait()
    del inherited
    executor.submit(fail, "never waited for")
    # No shutdown: exit drains the pool.
    """
)


@pytest.mark.parametrize("fork", [False, True], ids=["exit", "fork"])
def test_unretrieved_failures_reach_stderr_once_by_exit(fork):
    result = run_python(EXIT_SCRIPT.format(root=str(REPO_ROOT), fork=fork))
    assert result.returncode == 0, result.stderr
    for what in ("held to the end", "failed before the fork", "never waited for"):
        assert result.stderr.count(f"ValueError: {what}") == 1, result.stderr
    assert result.stderr.count(NEVER_RETRIEVED) == 3, result.stderr


def test_unit_of_work_failure_in_a_plain_thread_reaches_threading_excepthook(
    alias, monkeypatch
):
    """Not our thread, not our future: the stdlib's own hook reports it."""
    caught = []
    monkeypatch.setattr(threading, "excepthook", caught.append)

    @unit_of_work
    def job():
        Record.objects.using(alias).create(name="inside the unit")
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    (args,) = caught
    assert issubclass(args.exc_type, DatabaseError)
    assert "no_such_table" in str(args.exc_value)
    assert args.thread is thread
    assert Record.objects.using(alias).filter(name="inside the unit").exists()
