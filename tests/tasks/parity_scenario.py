"""One scenario of tasks, run through any Tasks backend, summarised comparably.

The parity test runs it in-process through ``ThreadPoolBackend`` and, in
fresh interpreters that call this module's functions, through two
distributed backends with their own workers: django-tasks-db's
``DatabaseBackend`` and its ``db_worker`` command on a fresh SQLite database
(:func:`main`), and django-tasks-rq's ``RQBackend`` with django-rq's
``rqworker --burst`` on a Redis database of its own (:func:`rq_enqueue`,
:func:`rq_work`, :func:`rq_summarize`, each a process of its own). Only the
settings differ: task code that works on the thread pool keeps working on a
distributed backend, and the summaries say so.
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


def _is_json(value: Any) -> bool:
    """Whether ``value`` is exactly what a JSON round trip gives back.

    The summaries travel as JSON, which would turn a tuple into a list and an
    ``int`` key into a string: this keeps that difference visible.
    """
    try:
        return bool(value == json.loads(json.dumps(value)))
    except (TypeError, ValueError):
        return False


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
        summary["return_value_is_json"] = _is_json(value)
    return summary


def summarize_all(ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    from tests.tasks import tasks

    backend = tasks.task_backends["default"]
    return {label: summarize(backend.get_result(ids[label])) for label in ids}


def _configure(db_path: str, apps: list[str], **options: Any) -> None:
    """Django on a SQLite file every process of a leg shares, plus ``options``."""
    import django
    from django.conf import settings

    installed = [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django_thread",
        "testproject.jobs",
        *apps,
    ]
    if django.VERSION < (6, 0):
        installed.append("django_tasks")
    settings.configure(
        INSTALLED_APPS=installed,
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        **options,
    )
    django.setup()


def _print(marker: str, value: Any) -> None:
    # repr() for what JSON refuses: a value RQ unpickled, summarised as it is.
    sys.stdout.write(marker + json.dumps(value, default=repr) + "\n")


def main(db_path: str) -> None:
    """django-tasks-db: enqueue, run ``db_worker --batch``, print the summary."""
    _configure(
        db_path,
        ["django_tasks_db"],
        TASKS={"default": {"BACKEND": "django_tasks_db.backend.DatabaseBackend"}},
    )
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
    _print(PARITY_MARKER, summarize_all(ids))


IDS_MARKER = "PARITY-IDS:"


def _configure_for_rq(db_path: str, redis_url: str) -> None:
    # The tasks' queue, "default", on the Redis database the test claimed.
    _configure(
        db_path,
        ["django_rq", "django_tasks_rq"],
        TASKS={"default": {"BACKEND": "django_tasks_rq.RQBackend"}},
        RQ_QUEUES={"default": {"URL": redis_url}},
    )


def rq_enqueue(db_path: str, redis_url: str) -> None:
    """RQ, first process: migrate, enqueue the scenario, print the result ids."""
    _configure_for_rq(db_path, redis_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    _print(IDS_MARKER, run_scenario())


def rq_work(db_path: str, redis_url: str) -> None:
    """RQ, second process: django-rq's worker, until the queue is empty.

    RQ's default worker forks a work horse for each job, as in production.
    """
    _configure_for_rq(db_path, redis_url)
    from django.core.management import call_command

    call_command("rqworker", "default", burst=True, job_class="django_tasks_rq.Job")


def rq_summarize(db_path: str, redis_url: str, ids: dict[str, str]) -> None:
    """RQ, third process: read every result back from Redis, print the summary."""
    _configure_for_rq(db_path, redis_url)
    _print(PARITY_MARKER, summarize_all(ids))
