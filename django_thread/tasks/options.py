"""The backend's OPTIONS: defaults, validation as system checks, the parsed form."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from django_thread.checks import unknown_name_hint

E_OPTIONS_TYPE = "django_thread.E101"
E_UNKNOWN_OPTION = "django_thread.E102"
E_WORKERS = "django_thread.E103"
E_QUEUE_WORKERS = "django_thread.E104"
E_MAX_RESULTS = "django_thread.E105"
E_RESULT_TTL = "django_thread.E106"
E_ENQUEUE_ON_COMMIT = "django_thread.E107"
E_DATABASE = "django_thread.E108"
E_APP_NOT_INSTALLED = "django_thread.E109"
E_PERSISTENT_CONNECTIONS = "django_thread.E110"
E_DURABLE = "django_thread.E111"
E_POLL_INTERVAL = "django_thread.E112"
E_LEASE = "django_thread.E113"
E_MAX_ATTEMPTS = "django_thread.E114"
E_DURABLE_NEEDS_TASKS_DB = "django_thread.E115"
E_DURABLE_ONLY = "django_thread.E116"
E_MEMORY_ONLY = "django_thread.E117"
W_SQLITE_CONCURRENT_WRITERS = "django_thread.W101"
W_DURABLE_NOT_MIGRATED = "django_thread.W102"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least_one(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _seconds_above_zero(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and value > 0


def _database_alias(value: Any) -> bool:
    return isinstance(value, str) and value in django_settings.DATABASES


@dataclasses.dataclass(frozen=True)
class Option:
    """One OPTIONS key: its default, and what a valid value is, for its check."""

    default: Any
    check_id: str
    #: Completes "KEY must be ...".
    expected: str
    is_valid: Callable[[Any], bool]
    hint: Callable[[], str]


#: Every OPTIONS key. The checks below are driven by this table.
OPTIONS: dict[str, Option] = {
    "WORKERS": Option(
        4,
        E_WORKERS,
        "an int of at least 1",
        _at_least_one,
        lambda: "Set OPTIONS['WORKERS'] to the worker threads per queue.",
    ),
    "QUEUE_WORKERS": Option(
        {},
        E_QUEUE_WORKERS,
        "a dict",
        lambda value: isinstance(value, Mapping),
        lambda: "Map queue names to worker counts: {'emails': 1}.",
    ),
    "MAX_RESULTS": Option(
        1000,
        E_MAX_RESULTS,
        "an int of at least 1",
        _at_least_one,
        lambda: "It bounds how many finished results are kept in memory.",
    ),
    "RESULT_TTL": Option(
        3600,
        E_RESULT_TTL,
        "a number of seconds above 0",
        _seconds_above_zero,
        lambda: "It bounds how long a finished result is kept in memory.",
    ),
    "ENQUEUE_ON_COMMIT": Option(
        True,
        E_ENQUEUE_ON_COMMIT,
        "a bool",
        lambda value: isinstance(value, bool),
        lambda: "Set it to True (the default) or False.",
    ),
    "DATABASE": Option(
        "default",
        E_DATABASE,
        "an alias in DATABASES",
        _database_alias,
        lambda: "Aliases: " + ", ".join(django_settings.DATABASES) + ".",
    ),
    "DURABLE": Option(
        False,
        E_DURABLE,
        "a bool",
        lambda value: isinstance(value, bool),
        lambda: (
            "True stores tasks in django-tasks-db's table (see "
            "django_thread.tasks.durable); False keeps them in memory."
        ),
    ),
    "POLL_INTERVAL": Option(
        1.0,
        E_POLL_INTERVAL,
        "a number of seconds above 0",
        _seconds_above_zero,
        lambda: "How often a DURABLE backend looks for tasks enqueued elsewhere.",
    ),
    "LEASE": Option(
        30.0,
        E_LEASE,
        "a number of seconds of at least 3",
        lambda value: _seconds_above_zero(value) and value >= 3,
        lambda: (
            "How long a process running DURABLE tasks may go silent before "
            "another one runs them again; it is renewed every LEASE / 3 s."
        ),
    ),
    "MAX_ATTEMPTS": Option(
        3,
        E_MAX_ATTEMPTS,
        "an int of at least 1",
        _at_least_one,
        lambda: (
            "How many times a DURABLE task may be started before a lost run "
            "marks it FAILED."
        ),
    ),
    "PERSISTENT_CONNECTIONS": Option(
        None,
        E_PERSISTENT_CONNECTIONS,
        "a bool or None",
        lambda value: value is None or isinstance(value, bool),
        lambda: (
            "True or False overrides DJANGO_THREAD_PERSISTENT_CONNECTIONS "
            "for this backend's workers; None (the default) follows it."
        ),
    ),
}

#: Keys that mean something only with DURABLE, and only without it.
DURABLE_ONLY = ("POLL_INTERVAL", "LEASE", "MAX_ATTEMPTS")
MEMORY_ONLY = {
    "MAX_RESULTS": "results are rows of django-tasks-db's DBTaskResult, kept "
    "until pruned",
    "RESULT_TTL": "results are rows of django-tasks-db's DBTaskResult, kept "
    "until pruned",
    "ENQUEUE_ON_COMMIT": "the task row is written in the caller's transaction, "
    "so it is committed or rolled back with it",
}

#: OPTIONS keys, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {name: spec.default for name, spec in OPTIONS.items()}


def option_errors(
    alias: str, options: Any, queues: Iterable[str]
) -> list[checks.CheckMessage]:
    """Every problem with a backend's OPTIONS, as system-check messages.

    The one place options are validated: ``check()`` reports these at
    startup, and the pool refuses to start on the errors among them, in
    case checks were skipped. Each message names the ``TASKS`` alias, so
    that a project with several backends can tell which one is meant.
    """
    errors = _option_errors(options, queues)
    for message in errors:
        message.msg = f"Task backend {alias!r}: {message.msg}"
    return errors


def _option_errors(options: Any, queues: Iterable[str]) -> list[checks.CheckMessage]:
    if not isinstance(options, Mapping):
        return [
            checks.Error(
                f"OPTIONS must be a dict, not {type(options).__name__}.",
                hint="Known keys: " + ", ".join(OPTIONS) + ".",
                id=E_OPTIONS_TYPE,
            )
        ]
    errors: list[checks.CheckMessage] = [
        checks.Error(
            f"Unknown OPTIONS key {key!r}: ThreadPoolBackend would ignore it.",
            hint=unknown_name_hint(str(key), OPTIONS, "keys"),
            id=E_UNKNOWN_OPTION,
        )
        for key in options
        if key not in OPTIONS
    ]
    values = {**DEFAULT_OPTIONS, **options}
    durable = values["DURABLE"] is True
    for name, spec in OPTIONS.items():
        if durable and name == "WORKERS" and values[name] == 0:
            continue  # a process that only enqueues; db_worker runs the tasks
        if not spec.is_valid(values[name]):
            errors.append(
                checks.Error(
                    f"{name} must be {spec.expected}, not {values[name]!r}.",
                    hint=spec.hint(),
                    id=spec.check_id,
                )
            )
    errors += _durable_mismatches(options, durable)
    known_queues = set(queues)
    if isinstance(values["QUEUE_WORKERS"], Mapping):
        errors += _queue_worker_errors(values["QUEUE_WORKERS"], known_queues, durable)
    if not errors:
        errors += sqlite_warnings(values["DATABASE"], values, known_queues)
    return errors


def _durable_mismatches(
    options: Mapping[str, Any], durable: bool
) -> list[checks.CheckMessage]:
    """Keys that the backend would ignore, DURABLE or not: no dead switches."""
    if durable:
        return [
            checks.Error(
                f"{name} does not apply with DURABLE: {reason}.",
                hint=(
                    f"Remove {name}. Prune finished results with `manage.py "
                    "prune_db_task_results --backend ALIAS --min-age-days N`."
                ),
                id=E_MEMORY_ONLY,
            )
            for name, reason in MEMORY_ONLY.items()
            if name in options
        ]
    return [
        checks.Error(
            f"{name} applies only with DURABLE.",
            hint=f"Set OPTIONS['DURABLE'] = True, or remove {name}.",
            id=E_DURABLE_ONLY,
        )
        for name in DURABLE_ONLY
        if name in options
    ]


def _queue_worker_errors(
    queue_workers: Mapping[Any, Any], known_queues: set[str], durable: bool = False
) -> list[checks.CheckMessage]:
    """QUEUE_WORKERS is a dict: each entry names a known queue and a count."""
    errors: list[checks.CheckMessage] = []
    for name, count in queue_workers.items():
        if known_queues and name not in known_queues:
            errors.append(
                checks.Error(
                    f"QUEUE_WORKERS names {name!r}, which is not in QUEUES.",
                    hint="QUEUES: " + ", ".join(sorted(known_queues)) + ".",
                    id=E_QUEUE_WORKERS,
                )
            )
        least = 0 if durable else 1
        if not (_is_int(count) and count >= least):
            errors.append(
                checks.Error(
                    f"QUEUE_WORKERS[{name!r}] must be an int of at least "
                    f"{least}, not {count!r}.",
                    hint=(
                        "With DURABLE, 0 leaves the queue to other processes "
                        "(db_worker)."
                        if durable
                        else "Give each queue one worker or more."
                    ),
                    id=E_QUEUE_WORKERS,
                )
            )
    return errors


def sqlite_warnings(
    database: str, values: Mapping[str, Any], queues: set[str]
) -> list[checks.CheckMessage]:
    """Warn when several workers may write to SQLite at once, unprepared.

    SQLite lets one connection write at a time. In its default DEFERRED
    mode, a transaction that read first and then writes cannot wait for
    another writer and fails at once with "database is locked"; with
    ``"transaction_mode": "IMMEDIATE"`` (Django 5.1+) it takes the write
    lock at BEGIN and waits, for up to ``timeout`` seconds (5 by default),
    which a busy pool may also exceed.
    """
    wrapper = connections[database]
    if wrapper.vendor != "sqlite":
        return []
    if queues:
        workers = sum(
            values["QUEUE_WORKERS"].get(queue, values["WORKERS"]) for queue in queues
        )
        if workers < 2:
            return []
        up_to = f"Up to {workers} task workers"
    else:
        # No QUEUES: any queue name is accepted, each with its own workers.
        up_to = "Several task workers"
    db_options = wrapper.settings_dict.get("OPTIONS") or {}
    init_command = str(db_options.get("init_command", "")).lower()
    if (
        str(db_options.get("transaction_mode", "")).upper() == "IMMEDIATE"
        or "timeout" in db_options
        or "busy_timeout" in init_command
    ):
        return []
    return [
        checks.Warning(
            f"{up_to} may write to the SQLite database {database!r} "
            "at once, and its OPTIONS set neither 'transaction_mode': "
            "'IMMEDIATE' nor a 'timeout': concurrent writes may fail with "
            "'database is locked'.",
            hint=(
                f"Add to DATABASES[{database!r}]['OPTIONS']: "
                "{'transaction_mode': 'IMMEDIATE', 'timeout': 20}, or run a "
                "single worker (one queue in QUEUES, OPTIONS['WORKERS'] = 1)."
            ),
            id=W_SQLITE_CONCURRENT_WRITERS,
        )
    ]


@dataclasses.dataclass(frozen=True)
class PoolOptions:
    """A backend's OPTIONS, validated, with defaults filled in."""

    workers: int
    queue_workers: dict[str, int]
    max_results: int
    result_ttl: float
    enqueue_on_commit: bool
    database: str
    persistent_connections: bool | None
    durable: bool = False
    poll_interval: float = 1.0
    lease: float = 30.0
    max_attempts: int = 3

    @classmethod
    def from_params(
        cls, alias: str, options: Any, queues: Iterable[str]
    ) -> PoolOptions:
        errors = [m for m in option_errors(alias, options, queues) if m.is_serious()]
        if errors:
            raise ImproperlyConfigured(
                "Invalid ThreadPoolBackend OPTIONS: "
                + " ".join(f"{error.msg} ({error.id})" for error in errors)
            )
        values = {**DEFAULT_OPTIONS, **options}
        return cls(
            workers=values["WORKERS"],
            queue_workers=dict(values["QUEUE_WORKERS"]),
            max_results=values["MAX_RESULTS"],
            result_ttl=float(values["RESULT_TTL"]),
            enqueue_on_commit=values["ENQUEUE_ON_COMMIT"],
            database=values["DATABASE"],
            persistent_connections=values["PERSISTENT_CONNECTIONS"],
            durable=values["DURABLE"],
            poll_interval=float(values["POLL_INTERVAL"]),
            lease=float(values["LEASE"]),
            max_attempts=values["MAX_ATTEMPTS"],
        )

    def workers_for(self, queue_name: str) -> int:
        return self.queue_workers.get(queue_name, self.workers)
