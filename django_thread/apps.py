"""The app: settings defaults, system checks, and clean shutdown at exit."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class DjangoThreadConfig(AppConfig):
    name = "django_thread"
    verbose_name = "django-thread"

    def ready(self) -> None:
        # Importing conf installs the DJANGO_THREAD_* defaults on settings.
        from django_thread import (
            conf,  # noqa: F401
            registry,
        )
        from django_thread.checks import check_settings, enable_task_backend_checks
        from django_thread.executor import ThreadPoolExecutor
        from django_thread.thread import Thread, Timer

        #: The classes whose work runs as units; executors among them are
        #: tracked live so that interpreter exit can shut them down.
        self.thread_classes = (Thread, Timer, ThreadPoolExecutor)
        checks.register(check_settings)
        enable_task_backend_checks()
        registry.install_exit_hook()
