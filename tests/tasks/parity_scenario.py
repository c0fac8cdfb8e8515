"""One scenario of tasks, run through any Tasks backend, summarised comparably.

The parity test runs it in-process through ``ThreadPoolBackend`` and, in a
subprocess started as ``python -m tests.tasks.parity_scenario DB_PATH``, through
django-tasks-db's ``DatabaseBackend`` and its ``db_worker`` command on a
fresh SQLite database. Both must summarise to the same thing: task code that
works on the thread pool keeps working on a distributed backend.
"""

from __future__ import annotations

import json
import sys
from typing import Any

PARITY_MARKER = "PARITY-RESULTS:"

#: (label, task name in tests.tasks.tasks, args, kwargs)
SCENARIO: list[tuple[str, str, list[Any], dict[str, Any]]] = [
    ("add", "add", [2, 3], {}),
    ("echo", "echo", [(1, 2), {1: "one", "nested": (3, 4)}, b"bytes"], {"flag": True}),
    ("return", "return_tuple_and_int_keys", [], {}),
    ("unserializable", "return_unserializable", [], {}),
    ("fail", "fail", ["boom"], {}),
    ("write", "write_record", ["default", "parity", 7], {}),
    ("count", "count_records", ["default", "parity"], {}),
    ("async", "async_add", [20, 22], {}),
    ("async-write", "async_write_record", ["default", "parity"], {}),
    ("context", "context_info", ["ctx"], {}),
]


def run_scenario() -> dict[str, str]:
    """Enqueue every task of the scenario; their result ids by label."""
    from tests.tasks import tasks

    return {
        label: getattr(tasks, name).enqueue(*args, **kwargs).id
        for label, name, args, kwargs in SCENARIO
    }


def summarize(result: Any) -> dict[str, Any]:
    """What task code can observe of a result, minus ids, times and workers."""
    summary: dict[str, Any] = {
        "status": str(result.status),
        "errors": [error.exception_class_path for error in result.errors],
        "attempts": result.attempts,
    }
    if result.status == "SUCCESSFUL":
        value = result.return_value
        if isinstance(value, dict) and "worker_ids" in value:
            # The context task reports ids; compare what they mean.
            value = {
                "label": value["label"],
                "attempt": value["attempt"],
                "knows_its_id": value["id"] == result.id,
                "knows_its_workers": value["worker_ids"] == result.worker_ids,
            }
        summary["return_value"] = value
    return summary


def summarize_all(ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    from tests.tasks import tasks

    backend = tasks.task_backends["default"]
    return {label: summarize(backend.get_result(ids[label])) for label in ids}


def _configure_for_database_backend(db_path: str) -> None:
    import django
    from django.conf import settings

    installed = [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django_thread",
        "testproject.jobs",
        "django_tasks_db",
    ]
    if django.VERSION < (6, 0):
        installed.append("django_tasks")
    settings.configure(
        INSTALLED_APPS=installed,
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}
        },
        TASKS={"default": {"BACKEND": "django_tasks_db.backend.DatabaseBackend"}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def main(db_path: str) -> None:
    _configure_for_database_backend(db_path)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    ids = run_scenario()
    call_command(
        "db_worker",
        batch=True,
        queue_name="*",
        interval=0,
        startup_delay=False,
        reload=False,
        verbosity=0,
    )
    sys.stdout.write(PARITY_MARKER + json.dumps(summarize_all(ids)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
