"""Django's request lifecycle for threads and thread pools."""

from django_thread.async_calls import sync_to_async, to_thread
from django_thread.executor import ThreadPoolExecutor
from django_thread.lifecycle import unit_of_work
from django_thread.thread import Thread, Timer

__version__ = "0.1.0"

__all__ = [
    "Thread",
    "ThreadPoolExecutor",
    "Timer",
    "sync_to_async",
    "to_thread",
    "unit_of_work",
]
