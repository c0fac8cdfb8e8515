"""The registry: what it manages comes from the AppConfig; the stdlib fence holds."""

from __future__ import annotations

import concurrent.futures
import inspect

from django.apps import apps

from django_thread import Thread, ThreadPoolExecutor, registry
from django_thread.asgi import RequestThreads
from django_thread.tasks.durable_engine import Engine
from django_thread.tasks.pools import Pool


def test_managed_classes_come_from_the_app_config():
    config = apps.get_app_config("django_thread")
    assert registry._resolve(registry._stopped_paths) == [Thread]
    assert registry._resolve(registry._drained_paths) == [
        RequestThreads,
        ThreadPoolExecutor,
        Pool,
        Engine,
    ]
    assert registry._stopped_paths == tuple(config.stopped_classes)
    assert registry._drained_paths == tuple(config.drained_classes)


def test_live_executor_is_tracked_until_shut_down_with_wait():
    executor = ThreadPoolExecutor(max_workers=1)
    executor.submit(int).result()
    assert executor in registry.live_owners()
    executor.shutdown(wait=False)
    assert executor in registry.live_owners()  # its workers may still run work
    executor.shutdown(wait=True)
    assert executor not in registry.live_owners()


def test_thread_is_tracked_while_it_runs():
    seen = []
    thread = Thread(target=lambda: seen.append(thread in registry.live_owners()))
    thread.start()
    thread.join()
    assert seen == [True]
    assert thread not in registry.live_owners()


def test_no_stdlib_pool_method_reads_state_this_class_does_not_set():
    """The fence of ``_new_generation``: every stdlib method is overridden.

    The stdlib's ``__init__`` never runs, so a stdlib method inherited as is
    would read attributes that do not exist, or were never meant for it.
    """
    stdlib = concurrent.futures.ThreadPoolExecutor
    for name, member in vars(stdlib).items():
        if inspect.isfunction(member) and name != "__init__":
            assert name in vars(ThreadPoolExecutor), name
