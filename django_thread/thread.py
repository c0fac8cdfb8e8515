"""``threading.Thread`` and ``threading.Timer`` whose whole run is one unit of work.

The lifecycle has to run *in the new thread* (connections are per thread)
and around whatever ``run()`` a subclass defines. ``threading`` offers no
public hook between ``start()`` and ``run()`` except ``run`` itself, which
subclasses override; so :meth:`Thread.start` puts a wrapper in the instance's
``run`` attribute, which ``threading`` looks up on the instance when the new
thread begins, and removes it again when the thread ends. Nothing else about
``threading.Thread`` changes: constructor, ``join``, ``daemon``, exceptions
reaching ``threading.excepthook``.

A running thread is registered with :mod:`django_thread.registry`, which at
interpreter exit calls :meth:`Thread.stop` and joins it for a bounded time:
the usual shape of a long-running ``run()`` is a loop, one unit of work per
iteration, that ends when ``self.stopping`` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from django_thread import registry
from django_thread.context import Snapshot, call_in, capture
from django_thread.lifecycle import ensure_app_installed, run_unit
from django_thread.thread_connections import owned_thread


def run_thread_body(
    sender: Any,
    run: Callable[[], object],
    snapshot: Snapshot | None,
    persistent_connections: bool | None = None,
) -> None:
    """The lifecycle around ``run``, then close everything the thread opened.

    The signals are sent inside the copied context too, so that receivers
    such as ``close_caches`` see what ``run()`` set up. This scope does not
    count as a :class:`~django_thread.unit_of_work` for nesting, so a
    long-running ``run()`` can make each loop iteration a unit of its own.
    """
    with owned_thread(persistent_connections):
        call_in(snapshot, partial(run_unit, absorb_inner_units=False), sender, run)


class Thread(threading.Thread):
    """A drop-in ``threading.Thread`` that runs Django's request lifecycle.

    ``request_started`` is sent in the new thread before ``run()``,
    ``request_finished`` after it, and when the thread ends every connection
    it opened is closed. ``start()`` never touches the caller's connections,
    so it is safe inside the caller's ``transaction.atomic()``. ``run()``
    executes in a copy of the context that was current at ``start()``
    (``DJANGO_THREAD_COPY_CONTEXT``).

    ``stopping`` is an event that :meth:`stop` sets; a long-running
    ``run()`` checks it between iterations (and waits on it instead of
    sleeping) and returns once it is set. At interpreter exit every running
    Thread is asked to stop and joined for up to
    ``DJANGO_THREAD_STOP_TIMEOUT`` seconds.

    When ``run()`` is a loop of :func:`~django_thread.unit_of_work`
    iterations, its connections are kept open across iterations, until the
    thread ends, if ``persistent_connections`` is True; ``None`` (the
    default) follows ``DJANGO_THREAD_PERSISTENT_CONNECTIONS``. It is a class
    attribute, set on the subclass that defines the loop, so that the
    ``threading.Thread`` constructor stays as it is.
    """

    #: True or False overrides ``DJANGO_THREAD_PERSISTENT_CONNECTIONS`` for
    #: this class's threads; None follows it.
    persistent_connections: bool | None = None

    #: Whether interpreter exit calls :meth:`stop` and waits for the thread
    #: (up to ``DJANGO_THREAD_STOP_TIMEOUT``). False leaves it to
    #: ``threading``, as a plain thread: a non-daemon one is waited for.
    stop_at_exit: bool = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Set by :meth:`stop`: the thread should finish its current work and
        #: return from ``run()``.
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Ask the thread to stop; returns at once (``join()`` to wait)."""
        self.stopping.set()

    def start(self) -> None:
        ensure_app_installed()
        snapshot = capture()
        had_own_run = "run" in vars(self)
        run = self.run

        def restore_run() -> None:
            if had_own_run:
                self.run = run  # type: ignore[method-assign]
            else:
                vars(self).pop("run", None)

        def run_as_unit() -> None:
            registry.register(self)
            try:
                run_thread_body(type(self), run, snapshot, self.persistent_connections)
            finally:
                registry.unregister(self)
                restore_run()

        self.run = run_as_unit  # type: ignore[method-assign]
        try:
            super().start()
        except BaseException:
            # Not started (started twice, or no thread available): undo.
            restore_run()
            raise


class Timer(Thread, threading.Timer):
    """A drop-in ``threading.Timer``; the wait and the call are one unit.

    At interpreter exit a pending timer is left to ``threading``, as a
    ``threading.Timer`` is (``stop_at_exit = False``); :meth:`stop` cancels it.
    """

    stop_at_exit = False

    def stop(self) -> None:
        """Cancel the timer if it is still waiting, and set ``stopping``."""
        self.cancel()
        super().stop()
