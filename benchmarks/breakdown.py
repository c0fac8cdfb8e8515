"""Where one unit of work's time goes, piece by piece, in one thread.

Each piece is timed alone with ``timeit`` (best of five repeats, per call),
in the main thread with no connection open, so that the pool's hand-offs
and the global interpreter lock do not blur it. The first rows are Django's
floor; the rest are what django-thread adds on top.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable


def per_call(fn: Callable[[], object], calls: int) -> float:
    return min(timeit.repeat(fn, number=calls, repeat=5)) / calls


def pieces() -> dict[str, Callable[[], object]]:
    from concurrent import futures

    from django.core.signals import request_finished, request_started
    from django.db import connections

    from django_thread.conf import settings
    from django_thread.context import call_in, capture
    from django_thread.lifecycle import finish_unit, run_unit, send_robustly, start_unit

    snapshot = capture()

    def signals() -> None:
        request_started.send(sender=None)
        request_finished.send(sender=None)

    def robust_signals() -> None:
        send_robustly(request_started, None, "request_started")
        send_robustly(request_finished, None, "request_finished")

    def future() -> None:
        done: futures.Future[None] = futures.Future()
        done.set_running_or_notify_cancel()
        done.set_result(None)

    return {
        "request_started + request_finished, send()": signals,
        "the same through send_robustly()": robust_signals,
        "run_unit(noop): start_unit + finish_unit": lambda: run_unit(None, noop),
        "start_unit()": lambda: start_unit(None),
        "finish_unit()": lambda: finish_unit(None, failed=False),
        "one setting read (django_thread.conf)": lambda: (
            settings.DJANGO_THREAD_SEND_SIGNALS
        ),
        # Django's receivers walk every alias three times per unit, and
        # finish_unit once more: the cost grows with the number of aliases.
        "connections.all(initialized_only=True), all aliases": lambda: connections.all(
            initialized_only=True
        ),
        "capture(): the Snapshot at submit": capture,
        "call_in(snapshot, noop)": lambda: call_in(snapshot, noop),
        "a Future, run and resolved": future,
    }


def noop() -> None:
    pass


def run(calls: int) -> None:
    print("\nBreakdown of one unit, one thread, no connection open (µs, best of 5)")
    for name, fn in pieces().items():
        print(f"  {name:<52}{per_call(fn, calls) * 1e6:>8.2f}")
