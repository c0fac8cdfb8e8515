"""Drop-in parity: code written for the stdlib classes behaves the same."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from django_thread import Thread, ThreadPoolExecutor, Timer

# --- Thread -----------------------------------------------------------------


def test_thread_runs_target_with_args_and_kwargs():
    seen = []
    thread = Thread(
        target=lambda *a, **k: seen.append((a, k)), args=(1, 2), kwargs={"x": 3}
    )
    thread.start()
    thread.join()
    assert seen == [((1, 2), {"x": 3})]
    assert not thread.is_alive()


def test_thread_is_a_threading_thread_with_name_and_daemon():
    thread = Thread(target=lambda: None, name="worker-7", daemon=True)
    assert isinstance(thread, threading.Thread)
    assert thread.name == "worker-7"
    assert thread.daemon is True
    thread.start()
    thread.join()


def test_subclass_run_executes_in_the_new_thread():
    class Worker(Thread):
        def run(self):
            self.ran_in = threading.get_ident()

    worker = Worker()
    worker.start()
    worker.join()
    assert worker.ran_in != threading.get_ident()


def test_exception_in_run_reaches_threading_excepthook(monkeypatch):
    caught = []
    monkeypatch.setattr(threading, "excepthook", caught.append)
    thread = Thread(target=lambda: 1 / 0)
    thread.start()
    thread.join()
    assert len(caught) == 1
    assert caught[0].exc_type is ZeroDivisionError
    assert caught[0].thread is thread


def test_starting_twice_raises_like_threading():
    thread = Thread(target=lambda: None)
    thread.start()
    thread.join()
    with pytest.raises(RuntimeError, match="threads can only be started once"):
        thread.start()


def test_run_is_the_class_method_again_after_the_thread_ends():
    thread = Thread(target=lambda: None)
    thread.start()
    thread.join()
    assert "run" not in vars(thread)


def test_timer_fires_and_can_be_cancelled():
    fired = threading.Event()
    timer = Timer(0.01, fired.set)
    assert isinstance(timer, threading.Timer)
    timer.start()
    assert fired.wait(5)
    timer.join()

    never = []
    cancelled = Timer(30, never.append, args=(1,))
    cancelled.start()
    cancelled.cancel()
    cancelled.join(5)
    assert not cancelled.is_alive()
    assert never == []


# --- ThreadPoolExecutor -------------------------------------------------------


def test_executor_is_a_stdlib_thread_pool_executor():
    with ThreadPoolExecutor() as executor:
        assert isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        assert executor.submit(pow, 2, 10).result() == 1024


def test_executor_validates_arguments_like_the_stdlib():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ThreadPoolExecutor(max_workers=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        ThreadPoolExecutor(initializer=42)


def test_map_with_timeout_raises_timeout_error():
    with ThreadPoolExecutor(max_workers=1) as executor:
        results = executor.map(time.sleep, [0.5], timeout=0.01)
        with pytest.raises(concurrent.futures.TimeoutError):
            list(results)


def test_map_returns_results_in_order():
    with ThreadPoolExecutor(max_workers=3) as executor:
        assert list(executor.map(lambda x: x * x, range(20))) == [
            x * x for x in range(20)
        ]


def test_as_completed_and_wait_work():
    with ThreadPoolExecutor(max_workers=2) as executor:
        futures = [executor.submit(lambda i=i: i) for i in range(5)]
        assert sorted(
            f.result() for f in concurrent.futures.as_completed(futures)
        ) == list(range(5))
        done, pending = concurrent.futures.wait(futures)
        assert len(done) == 5 and not pending


def test_exceptions_travel_through_the_future():
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            future.result()
        assert executor.submit(lambda: "still works").result() == "still works"


def test_submit_after_shutdown_raises():
    executor = ThreadPoolExecutor(max_workers=1)
    executor.shutdown()
    with pytest.raises(
        RuntimeError, match="cannot schedule new futures after shutdown"
    ):
        executor.submit(print)


def test_shutdown_cancel_futures_cancels_queued_work():
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(5)

    executor = ThreadPoolExecutor(max_workers=1)
    running = executor.submit(hold)
    queued = [executor.submit(lambda: None) for _ in range(3)]
    # Running, not queued: shutdown() would cancel it too, as the stdlib's would.
    assert started.wait(5)
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert running.result() is True
    assert all(f.cancelled() for f in queued)
    executor.shutdown(wait=True)


def test_thread_name_prefix_and_worker_reuse():
    names = set()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobs") as executor:
        for _ in range(10):
            names.add(executor.submit(lambda: threading.current_thread().name).result())
    # Sequential submissions reuse the idle worker rather than spawning more.
    assert names == {"jobs_0"}


def test_never_more_threads_than_max_workers():
    barrier = threading.Barrier(3, timeout=5)
    with ThreadPoolExecutor(max_workers=3) as executor:
        idents = list(
            executor.map(lambda _: (barrier.wait(), threading.get_ident())[1], range(3))
        )
        more = list(executor.map(lambda _: threading.get_ident(), range(30)))
    assert len(set(idents)) == 3
    assert set(more) <= set(idents)


def test_initializer_runs_in_each_worker_with_initargs():
    local = threading.local()

    def init(value):
        local.value = value

    with ThreadPoolExecutor(max_workers=1, initializer=init, initargs=(5,)) as executor:
        assert executor.submit(lambda: local.value).result() == 5


def test_failing_initializer_breaks_the_pool():
    def init():
        raise ValueError("boom")

    executor = ThreadPoolExecutor(max_workers=1, initializer=init)
    future = executor.submit(lambda: None)
    with pytest.raises(concurrent.futures.thread.BrokenThreadPool):
        future.result(timeout=5)
    with pytest.raises(concurrent.futures.thread.BrokenThreadPool):
        executor.submit(lambda: None)
    executor.shutdown()


def test_asyncio_accepts_it_as_default_executor():
    async def main():
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1)
        loop.set_default_executor(executor)
        return await loop.run_in_executor(None, lambda: threading.current_thread().name)

    name = asyncio.run(main())
    assert name.startswith("ThreadPoolExecutor-")
