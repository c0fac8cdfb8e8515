"""django_thread's pytest plugin, loaded by pytest through the ``pytest11`` entry point.

- The ``share_test_connections`` fixture: django_thread's units run on the
  test's connections (see :func:`django_thread.testing.share_test_connections`).
- Before pytest-django's ``django_db_setup`` destroys the test databases,
  every idle django_thread worker closes its connections.

Importing this module must stay cheap and must not need Django settings:
pytest loads it in every project where django-thread is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def share_test_connections() -> Iterator[None]:
    """django_thread's units use this test's connections, in its transaction.

    Use it with ``@pytest.mark.django_db`` (or after ``db`` in the
    arguments) so that it starts after the test's transaction and ends
    before its rollback.
    """
    from django_thread.testing import share_test_connections as shared

    with shared():
        yield


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    """Release workers' connections right before the test databases go.

    Finalizers of a fixture run last-in first-out, so one added once
    ``django_db_setup`` has set up runs before its teardown destroys the
    databases, whichever ``django_db_setup`` a project defines.
    """
    result = yield
    if fixturedef.argname == "django_db_setup":
        blocker = request.getfixturevalue("django_db_blocker")
        request.addfinalizer(lambda: _release_worker_connections(blocker))
    return result


def _release_worker_connections(django_db_blocker: Any) -> None:
    """As pytest-django tears the databases down: with database access allowed.

    The workers' cleanup reads their connections' state, which pytest-django
    forbids outside a test otherwise: it could not tell whether a worker left
    a transaction open.
    """
    from django_thread import registry

    with django_db_blocker.unblock():
        registry.release_connections()
