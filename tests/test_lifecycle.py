"""The request lifecycle around each unit of work, on real databases."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading

import pytest
from django.core.signals import request_finished, request_started
from django.db import connections
from django.test import override_settings

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from testproject.jobs.models import Record
from tests.helpers import (
    backend_id,
    database_settings,
    server_connection_count,
    wait_for,
)


@contextlib.contextmanager
def connected(signal, receiver):
    signal.connect(receiver, weak=False)
    try:
        yield
    finally:
        signal.disconnect(receiver)


def test_signals_fire_in_the_worker_with_the_class_as_sender():
    events = []

    def record(signal_name):
        return lambda sender, **kwargs: events.append(
            (signal_name, sender, threading.get_ident())
        )

    with (
        connected(request_started, record("started")),
        connected(request_finished, record("finished")),
    ):
        with ThreadPoolExecutor(max_workers=1) as executor:
            worker = executor.submit(threading.get_ident).result()
        thread = Thread(target=lambda: None)
        thread.start()
        thread.join()

    assert events[0] == ("started", ThreadPoolExecutor, worker)
    assert events[1] == ("finished", ThreadPoolExecutor, worker)
    assert [e[:2] for e in events[2:]] == [("started", Thread), ("finished", Thread)]
    assert events[2][2] == events[3][2] != threading.get_ident()


def test_failing_receiver_is_logged_and_stops_nothing(
    alias, caplog, opened_connections
):
    later_receiver_ran = []

    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    with database_settings(alias, CONN_MAX_AGE=0):
        with (
            connected(request_finished, broken),
            connected(request_finished, lambda **kw: later_receiver_ran.append(True)),
        ):
            with caplog.at_level(logging.ERROR, logger="django_thread"):
                with ThreadPoolExecutor(max_workers=1) as executor:
                    result = executor.submit(
                        lambda: Record.objects.using(alias).count()
                    ).result()
    assert result == 0
    assert later_receiver_ran == [True]
    assert "receiver bug" in caplog.text or any(r.exc_info for r in caplog.records)
    assert any(r.name == "django_thread" for r in caplog.records)
    assert opened_connections.opened(alias) == 1
    assert opened_connections.still_open() == 0


def test_conn_max_age_zero_closes_after_every_unit(alias, opened_connections):
    with database_settings(alias, CONN_MAX_AGE=0):
        with ThreadPoolExecutor(max_workers=1) as executor:
            for _ in range(3):
                executor.submit(lambda: Record.objects.using(alias).exists()).result()
                # The future completes only after the unit's cleanup ran.
                assert opened_connections.still_open(alias) == 0
    assert opened_connections.opened(alias) == 3


@pytest.mark.parametrize("max_age", [600, None], ids=["600", "None"])
def test_persistent_connection_is_reused_per_worker(alias, max_age, opened_connections):
    with database_settings(alias, CONN_MAX_AGE=max_age):
        with ThreadPoolExecutor(max_workers=1) as executor:
            ids = {executor.submit(backend_id, alias).result() for _ in range(5)}
            assert opened_connections.still_open(alias) == 1
    assert len(ids) == 1
    assert opened_connections.opened(alias) == 1
    assert opened_connections.still_open() == 0  # closed when the worker exited


def test_every_alias_a_unit_touched_is_cleaned(server_alias, opened_connections):
    with (
        database_settings(server_alias, CONN_MAX_AGE=0),
        database_settings("default", CONN_MAX_AGE=0),
    ):

        def touch_two_databases():
            Record.objects.using("default").exists()
            Record.objects.using(server_alias).exists()

        with ThreadPoolExecutor(max_workers=1) as executor:
            executor.submit(touch_two_databases).result()
            assert opened_connections.opened() == 2
            assert opened_connections.still_open() == 0


@override_settings(DJANGO_THREAD_SEND_SIGNALS=False)
def test_without_signals_django_cleanup_still_runs(alias, opened_connections):
    sent = []
    with (
        connected(request_started, lambda **kw: sent.append("started")),
        connected(request_finished, lambda **kw: sent.append("finished")),
    ):
        with database_settings(alias, CONN_MAX_AGE=0):
            with ThreadPoolExecutor(max_workers=1) as executor:
                executor.submit(lambda: Record.objects.using(alias).exists()).result()
                assert opened_connections.still_open(alias) == 0
    assert sent == []
    assert opened_connections.opened(alias) == 1


def query_then_fail(alias):
    """A job that fails after its connection has been used."""
    Record.objects.using(alias).exists()
    raise ValueError("job failed")


def test_failed_unit_closes_its_connections_despite_conn_max_age(
    alias, opened_connections
):
    with database_settings(alias, CONN_MAX_AGE=600):
        with ThreadPoolExecutor(max_workers=1) as executor:
            with pytest.raises(ValueError):
                executor.submit(query_then_fail, alias).result()
            assert opened_connections.still_open(alias) == 0
            # The next job gets a fresh connection and works.
            assert (
                executor.submit(lambda: Record.objects.using(alias).count()).result()
                == 0
            )


@override_settings(DJANGO_THREAD_CLOSE_ON_ERROR=False)
def test_close_on_error_can_be_switched_off(alias, opened_connections):
    with database_settings(alias, CONN_MAX_AGE=600):
        with ThreadPoolExecutor(max_workers=1) as executor:
            with pytest.raises(ValueError):
                executor.submit(query_then_fail, alias).result()
            assert opened_connections.still_open(alias) == 1


def test_thread_closes_all_connections_when_it_ends(alias, opened_connections):
    gc.disable()  # the bug class is "closed only when the gc runs"
    try:
        with database_settings(alias, CONN_MAX_AGE=None):
            thread = Thread(target=lambda: Record.objects.using(alias).create(name="t"))
            thread.start()
            thread.join()
            # (Django 6 on MariaDB opens a second, short-lived connection
            # once per thread to read the server's version.)
            assert opened_connections.opened(alias) >= 1
            assert opened_connections.still_open() == 0
            if alias != "default":
                wait_for(
                    lambda: server_connection_count(alias) == 0,
                    "thread's connection to close",
                )
    finally:
        gc.enable()
    assert Record.objects.using(alias).filter(name="t").count() == 1


def test_executor_shutdown_leaves_no_connection_on_the_server(server_alias):
    gc.disable()
    try:
        with database_settings(server_alias, CONN_MAX_AGE=600):
            barrier = threading.Barrier(4, timeout=10)

            def query_then_wait():
                Record.objects.using(server_alias).exists()
                barrier.wait()

            executor = ThreadPoolExecutor(max_workers=4)
            for future in [executor.submit(query_then_wait) for _ in range(4)]:
                future.result()
            assert server_connection_count(server_alias) == 4
            executor.shutdown(wait=True)
            wait_for(
                lambda: server_connection_count(server_alias) == 0,
                "workers' connections to close",
            )
    finally:
        gc.enable()


def test_at_most_max_workers_connections_per_database(server_alias):
    peak = []
    lock = threading.Lock()

    def job(i):
        Record.objects.using(server_alias).create(name="n", value=i)
        with lock:
            peak.append(server_connection_count_from_worker(server_alias))

    with database_settings(server_alias, CONN_MAX_AGE=600):
        with ThreadPoolExecutor(max_workers=3) as executor:
            list(executor.map(job, range(30)))
    assert max(peak) <= 3
    assert Record.objects.using(server_alias).count() == 30


def server_connection_count_from_worker(alias):
    """Counted from a worker: its own connection is one of the pool's."""
    return server_connection_count(alias) + 1


def test_unit_of_work_as_decorator_and_loop_body(alias, opened_connections):
    processed = []

    @unit_of_work()
    def process(i):
        Record.objects.using(alias).create(name="loop", value=i)
        processed.append(i)

    class Poller(Thread):
        def run(self):
            for i in range(3):
                with unit_of_work():
                    process(i)  # nested: part of the loop's unit, no extra cleanup
                    # Inside the unit the connection is open...
                    assert connections[alias].connection is not None
                # ...and CONN_MAX_AGE=0 closed it after each iteration.
                assert connections[alias].connection is None

    with database_settings(alias, CONN_MAX_AGE=0):
        poller = Poller()
        errors = []
        with_excepthook(errors, poller)
    assert errors == []
    assert processed == [0, 1, 2]
    assert opened_connections.opened(alias) >= 3  # one per iteration at least
    assert opened_connections.still_open() == 0


def with_excepthook(errors, thread):
    original = threading.excepthook
    threading.excepthook = errors.append
    try:
        thread.start()
        thread.join()
    finally:
        threading.excepthook = original


def test_unit_of_work_in_a_plain_thread(alias, opened_connections):
    @unit_of_work()
    def job():
        return Record.objects.using(alias).count()

    with database_settings(alias, CONN_MAX_AGE=0):
        results = []
        plain = threading.Thread(target=lambda: results.append(job()))
        plain.start()
        plain.join()
    assert results == [0]
    assert opened_connections.still_open() == 0


class Consumer:
    """A sender of one's own, as a queue consumer would pass."""


@pytest.mark.parametrize(
    ("form", "sender"),
    [("bare", unit_of_work), ("called", unit_of_work), ("sender", Consumer)],
    ids=["@unit_of_work", "@unit_of_work()", "@unit_of_work(sender=)"],
)
def test_unit_of_work_decorator_runs_the_function_as_one_unit(
    alias, opened_connections, form, sender
):
    events = []
    seen_inside = []

    def job(name, *, value):
        """Writes a row."""
        Record.objects.using(alias).create(name=name, value=value)
        seen_inside.append(connections[alias].connection is not None)
        return value * 2

    if form == "bare":
        decorated = unit_of_work(job)
    elif form == "called":
        decorated = unit_of_work()(job)
    else:
        decorated = unit_of_work(sender=Consumer)(job)
    assert decorated.__name__ == "job"
    assert decorated.__doc__ == "Writes a row."

    def record(signal_name):
        return lambda sender, **kwargs: events.append((signal_name, sender))

    results = []
    with (
        database_settings(alias, CONN_MAX_AGE=0),
        connected(request_started, record("started")),
        connected(request_finished, record("finished")),
    ):
        plain = threading.Thread(
            target=lambda: results.append(
                (decorated("row", value=21), connections[alias].connection)
            )
        )
        plain.start()
        plain.join()
    assert results == [(42, None)]  # it ran, and the unit closed its connection
    assert seen_inside == [True]
    assert events == [("started", sender), ("finished", sender)]
    assert Record.objects.using(alias).get().value == 21
    assert opened_connections.opened(alias) >= 1
    assert opened_connections.still_open() == 0


def test_bare_unit_of_work_decorator_stays_transparent_when_nested(alias):
    """Decorated without parentheses, a function called inside a unit joins it."""
    starts = []

    @unit_of_work
    def inner():
        return Record.objects.using(alias).count()

    with connected(request_started, lambda sender, **kwargs: starts.append(sender)):
        with ThreadPoolExecutor(max_workers=1) as executor:
            assert executor.submit(inner).result() == 0
    assert starts == [ThreadPoolExecutor]


def test_unit_of_work_refuses_a_positional_non_callable():
    with pytest.raises(TypeError, match="sender is keyword-only"):
        unit_of_work("a sender")  # type: ignore[call-overload]


def test_a_sender_class_passed_positionally_is_refused_with_the_fix():
    # Before: the class was "decorated", and the decorator then called it
    # with the function: TypeError: Consumer() takes no arguments.
    class Consumer:
        pass

    with pytest.raises(
        TypeError,
        match=r"sender is keyword-only, unit_of_work\(sender=Consumer\)",
    ):

        @unit_of_work(Consumer)
        def handle() -> None:
            pass


def test_a_unit_that_cannot_read_its_connection_says_so_and_leaves_it(
    alias, django_db_blocker, caplog
):
    # pytest-django's blocker, as in a test without database access, while a
    # worker keeps the connection an earlier test made it open. Before:
    # Django's receivers raised, and the unit discarded the connection,
    # logging a transaction it had never opened.
    with ThreadPoolExecutor(max_workers=1, persistent_connections=True) as executor:

        def connect():
            connections[alias].ensure_connection()
            return connections[alias]

        wrapper = executor.submit(connect).result()
        caplog.clear()
        with caplog.at_level(logging.DEBUG), django_db_blocker.block():
            assert executor.submit(lambda: 1).result() == 1
        assert [(r.name, r.levelname) for r in caplog.records] == [
            ("django_thread", "WARNING")
        ]
        assert (
            caplog.records[0]
            .getMessage()
            .endswith(
                f"could not inspect its connection to {alias!r} (RuntimeError: "
                'Database access not allowed, use the "django_db" mark, or the "db" '
                'or "transactional_db" fixtures to enable it.); it was left as it was'
            )
        )
        # Left as it was: the same open connection serves the next job.
        assert wrapper.connection is not None
        assert executor.submit(connect).result() is wrapper
        assert (
            executor.submit(lambda: Record.objects.using(alias).count()).result() == 0
        )


def test_a_unit_does_not_wait_for_the_request_signals_lock():
    """Units list Django's receivers without taking each signal's lock.

    With several workers on few cores, a worker that found that lock taken
    gave up the interpreter and waited for it again, once per signal sent.
    """
    events = []
    with connected(request_finished, lambda **kwargs: events.append("finished")):
        with ThreadPoolExecutor(max_workers=1) as executor:
            executor.submit(lambda: None).result()  # the worker is started
            with request_started.lock, request_finished.lock:
                future = executor.submit(lambda: "done")
                assert future.result(timeout=10) == "done"
    assert events == ["finished", "finished"]


def test_a_failing_receiver_is_logged_by_django_too(caplog):
    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    with connected(request_started, broken):
        with caplog.at_level(logging.ERROR):
            with ThreadPoolExecutor(max_workers=1) as executor:
                assert executor.submit(lambda: 1).result() == 1
    django_records = [r for r in caplog.records if r.name == "django.dispatch"]
    assert [r.getMessage() for r in django_records] == [
        "Error calling test_a_failing_receiver_is_logged_by_django_too.<locals>."
        "broken in Signal.send_robust() (receiver bug)"
    ]
    assert django_records[0].exc_info is not None


def test_pool_workers_have_a_wrapper_per_alias_and_no_connection():
    """Django's receivers then find every alias without a failed lookup."""
    from django_thread.internals import initialized_connections, is_connected

    def wrappers():
        found = initialized_connections()
        return sorted(c.alias for c in found), [
            c.alias for c in found if is_connected(c)
        ]

    with ThreadPoolExecutor(max_workers=1) as executor:
        aliases, connected = executor.submit(wrappers).result()
    assert aliases == sorted(connections)
    assert connected == []
