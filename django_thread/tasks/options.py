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
W_SQLITE_CONCURRENT_WRITERS = "django_thread.W101"


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
    for name, spec in OPTIONS.items():
        if not spec.is_valid(values[name]):
            errors.append(
                checks.Error(
                    f"{name} must be {spec.expected}, not {values[name]!r}.",
                    hint=spec.hint(),
                    id=spec.check_id,
                )
            )
    known_queues = set(queues)
    if isinstance(values["QUEUE_WORKERS"], Mapping):
        errors += _queue_worker_errors(values["QUEUE_WORKERS"], known_queues)
    if not errors:
        errors += sqlite_warnings(values["DATABASE"], values, known_queues)
    return errors


def _queue_worker_errors(
    queue_workers: Mapping[Any, Any], known_queues: set[str]
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
        if not _at_least_one(count):
            errors.append(
                checks.Error(
                    f"QUEUE_WORKERS[{name!r}] must be an int of at least 1, "
                    f"not {count!r}.",
                    hint="Give each queue one worker or more.",
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
        )

    def workers_for(self, queue_name: str) -> int:
        return self.queue_workers.get(queue_name, self.workers)
