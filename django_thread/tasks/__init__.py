"""A backend for Django's Tasks framework that runs tasks on in-process workers.

``django.tasks`` (Django >= 6.0, or the ``django-tasks`` backport on 5.2)
ships only an ``ImmediateBackend``, which runs the task inside the caller,
and a ``DummyBackend``, which never runs it. :class:`ThreadPoolBackend`
runs tasks off the request thread, on worker threads of this process, with
the same guarantees as every django_thread unit of work: each task runs
between ``request_started`` and ``request_finished``, so ``CONN_MAX_AGE``,
``CONN_HEALTH_CHECKS`` and broken connections are handled as in a request,
a transaction the task leaked is rolled back, and its connections are
closed when it fails.

It is meant as the first backend of a project, the one it outgrows: task
code written against it must keep working when ``TASKS`` points at a
database, RQ or Celery backend. So it behaves like a distributed backend
where that matters:

- arguments are serialized to JSON in the caller and deserialized by the
  worker, return values the other way (tuples arrive as lists, integer
  dict keys as strings, a ``datetime`` is refused), so a task never works
  here only because it received a live Python object (plain strings,
  numbers, booleans and None skip the trip: it could not change them);
- each task runs in a fresh ``contextvars`` context, with the default
  language and time zone: a worker process would not see the caller's;
- enqueueing inside ``transaction.atomic()`` is deferred until the commit
  (``ENQUEUE_ON_COMMIT``), so a task never reads rows its caller has not
  committed, a race a distributed worker would hit at random.

Results live in this process's memory, bounded in count and age, and die
with it; nothing is retried after a restart.

``django.tasks.task_backends`` creates one backend instance per thread and
async context, so the worker pools cannot live on the instance: they live
in a module-level registry keyed by backend alias, reset when the ``TASKS``
setting changes, and shut down at interpreter exit by
:mod:`django_thread.registry` like every django_thread executor.
"""

from django_thread.tasks.backend import ThreadPoolBackend
from django_thread.tasks.pools import reset_pools

__all__ = ["ThreadPoolBackend", "reset_pools"]
