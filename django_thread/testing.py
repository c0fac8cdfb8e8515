"""Testing code that hands work to threads: one line per test, one per runner.

``share_test_connections`` makes the units of work that start while it is in
effect run on the test's own connections (see :mod:`django_thread.sharing`
for how, and what it costs), so that inside ``TestCase`` they see the rows
the test created and their writes roll back with it::

    from django_thread.testing import share_test_connections

    class ReportTests(TestCase):
        @share_test_connections
        def test_report_counts_orders(self):
            ...

It also decorates a whole ``TestCase`` class, and works as a context
manager. pytest-django users request the ``share_test_connections`` fixture
of :mod:`django_thread.pytest_plugin`, which pytest loads by itself.

:class:`DiscoverRunner` (or :class:`ReleaseConnectionsMixin` on a runner of
your own) makes every idle django_thread worker close its connections before
the test databases are destroyed: a module-level pool that ran a query would
otherwise keep a connection open, and PostgreSQL refuses to drop a database
"being accessed by other users". The pytest plugin does the same.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from asgiref.sync import sync_to_async
from django.test.runner import DiscoverRunner as DjangoDiscoverRunner

from django_thread import registry, sharing

__all__ = [
    "DiscoverRunner",
    "ReleaseConnectionsMixin",
    "share_test_connections",
]

T = TypeVar("T", bound=Callable[..., Any])


class _SharedTestConnections:
    """The scope of :func:`share_test_connections`."""

    def __enter__(self) -> _SharedTestConnections:
        sharing.lend()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        sharing.end_lending()

    def __call__(self, decorated: T) -> T:
        if isinstance(decorated, type):
            return cast(T, self._decorate_test_case(decorated))
        if inspect.iscoroutinefunction(decorated):
            return cast(T, self._decorate_coroutine_function(decorated))

        @functools.wraps(decorated)
        def shared(*args: Any, **kwargs: Any) -> Any:
            with self:
                return decorated(*args, **kwargs)

        return cast(T, shared)

    def _decorate_coroutine_function(
        self, decorated: Callable[..., Any]
    ) -> Callable[..., Any]:
        """Lend from the test's thread, not from the event loop's.

        Django runs an async test with ``async_to_sync``: the coroutine in
        an event loop on a thread of its own, and the ORM calls it makes
        through ``sync_to_async`` in the test's thread, on the test's
        connections. So those are the connections to lend, from that
        thread, as the class form does from ``setUp()``.
        """

        @functools.wraps(decorated)
        async def shared(*args: Any, **kwargs: Any) -> Any:
            await sync_to_async(self.__enter__)()
            try:
                return await decorated(*args, **kwargs)
            finally:
                await sync_to_async(self.__exit__)(None, None, None)

        return shared

    @staticmethod
    def _decorate_test_case(cls: Any) -> Any:
        """Share for each test of the class, from ``setUp()`` to its cleanups.

        Cleanups run before ``TestCase`` rolls its transaction back, so units
        still running finish on the test's connections first.
        """
        import unittest

        if not issubclass(cls, unittest.TestCase):
            raise TypeError(
                f"share_test_connections can decorate a TestCase class, a test "
                f"method or a function, not {cls!r}."
            )
        set_up = cls.setUp

        @functools.wraps(set_up)
        def setUp(self: Any) -> None:
            scope = _SharedTestConnections()
            scope.__enter__()
            self.addCleanup(scope.__exit__, None, None, None)
            set_up(self)

        cls.setUp = setUp
        return cls


@overload
def share_test_connections(test: None = None) -> _SharedTestConnections: ...
@overload
def share_test_connections(test: T) -> T: ...
def share_test_connections(test: Any = None) -> Any:
    """Run django_thread's units on this test's connections, in its transaction.

    A decorator for a test method, a ``TestCase`` class or a function, with or
    without parentheses, and a context manager (``with
    share_test_connections():``). Inside it, work run by django_thread
    (executor jobs, ``Thread`` and ``Timer`` bodies, ``unit_of_work``
    blocks, Tasks-backend tasks) sees the test's uncommitted rows, its writes
    roll back with the test, and SQLite's in-memory test database works.
    Units use the database one at a time; use it in the test's own thread.
    An ``async def`` test lends the connections of the thread its ORM calls
    run in: under ``TestCase``, the test's own.
    """
    scope = _SharedTestConnections()
    return scope if test is None else scope(test)


class ReleaseConnectionsMixin:
    """A test runner mixin: workers close their connections before teardown.

    It works before or after Django's ``DiscoverRunner`` in the bases.
    Listed after it, its ``teardown_databases`` would never run (Django's
    does not call ``super()``), and PostgreSQL would refuse to drop the test
    databases: so such a class gets the release put in front of the
    ``teardown_databases`` it would otherwise run.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if DjangoDiscoverRunner not in mro:
            return
        shadowing = mro[: mro.index(DjangoDiscoverRunner)]
        if ReleaseConnectionsMixin in shadowing or any(
            getattr(vars(base).get("teardown_databases"), _RELEASES, False)
            for base in shadowing
        ):
            return  # the release runs already, through super() or a base
        teardown = cls.teardown_databases

        @functools.wraps(teardown)
        def teardown_databases(self: Any, old_config: Any, **kwargs: Any) -> None:
            registry.release_connections()
            teardown(self, old_config, **kwargs)

        setattr(teardown_databases, _RELEASES, True)
        cls.teardown_databases = teardown_databases  # type: ignore[method-assign]

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        registry.release_connections()
        super().teardown_databases(old_config, **kwargs)  # type: ignore[misc]


#: Marks a ``teardown_databases`` that releases workers' connections first.
_RELEASES = "releases_worker_connections"


class DiscoverRunner(ReleaseConnectionsMixin, DjangoDiscoverRunner):
    """Django's runner: ``TEST_RUNNER = "django_thread.testing.DiscoverRunner"``."""
