"""The app, wired at a glance: settings, checks, the managed classes, exit and fork."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.core.signals import request_started, setting_changed
from django.db.backends.signals import connection_created


class DjangoThreadConfig(AppConfig):
    name = "django_thread"
    verbose_name = "django-thread"

    #: Classes whose running instances are threads of their own: at
    #: interpreter exit each is asked to ``stop()`` and joined, up to
    #: ``DJANGO_THREAD_STOP_TIMEOUT`` seconds in all. They go first, since
    #: they may still hand work to the pools below.
    stopped_classes = ("django_thread.thread.Thread",)
    #: Classes whose live instances own worker threads: at exit each drains
    #: its queued work (or cancels it, ``DJANGO_THREAD_CANCEL_AT_EXIT``), in
    #: this order: ASGI request threads first, then executors before task
    #: pools since executor jobs may enqueue tasks; in a forked child each
    #: starts afresh.
    drained_classes = (
        "django_thread.asgi.RequestThreads",
        "django_thread.executor.ThreadPoolExecutor",
        "django_thread.tasks.pools.Pool",
        "django_thread.tasks.durable_engine.Engine",
    )

    def ready(self) -> None:
        from django_thread import (
            conf,  # noqa: F401  (installs the DJANGO_THREAD_* defaults)
            durable_hooks,
            registry,
        )
        from django_thread.checks import check_settings, enable_task_backend_checks
        from django_thread.thread_connections import track_owned_connection

        checks.register(check_settings)
        checks.register(durable_hooks.check_durable_tables, checks.Tags.database)
        # DURABLE task backends: workers start with a process's first request.
        request_started.connect(
            durable_hooks.start_on_first_request,
            dispatch_uid="django_thread.durable_hooks.start",
        )
        setting_changed.connect(
            durable_hooks.forget_started, dispatch_uid="django_thread.durable_hooks"
        )
        enable_task_backend_checks()
        registry.manage(stopped=self.stopped_classes, drained=self.drained_classes)
        # Exit: stop threads, drain pools. Fork: fresh pools in the child.
        registry.install_hooks()
        # The connections of the threads django_thread owns (persistent ones).
        connection_created.connect(
            track_owned_connection, dispatch_uid="django_thread.lifecycle.track"
        )
