"""The backend's OPTIONS: defaults, validation as system checks, the parsed form."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

#: OPTIONS keys, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "WORKERS": 4,
    "QUEUE_WORKERS": {},
    "MAX_RESULTS": 1000,
    "RESULT_TTL": 3600,
    "ENQUEUE_ON_COMMIT": True,
    "DATABASE": "default",
}

E_OPTIONS_TYPE = "django_thread.E101"
E_UNKNOWN_OPTION = "django_thread.E102"
E_WORKERS = "django_thread.E103"
E_QUEUE_WORKERS = "django_thread.E104"
E_MAX_RESULTS = "django_thread.E105"
E_RESULT_TTL = "django_thread.E106"
E_ENQUEUE_ON_COMMIT = "django_thread.E107"
E_DATABASE = "django_thread.E108"
E_APP_NOT_INSTALLED = "django_thread.E109"
W_SQLITE_CONCURRENT_WRITERS = "django_thread.W101"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def option_errors(options: Any, queues: Iterable[str]) -> list[checks.CheckMessage]:
    """Every problem with a backend's OPTIONS, as system-check messages.

    The one place options are validated: ``check()`` reports these at
    startup, and the pool refuses to start on the errors among them, in
    case checks were skipped.
    """
    if not isinstance(options, Mapping):
        return [
            checks.Error(
                f"OPTIONS must be a dict, not {type(options).__name__}.",
                hint="Known keys: " + ", ".join(DEFAULT_OPTIONS) + ".",
                id=E_OPTIONS_TYPE,
            )
        ]
    errors: list[checks.CheckMessage] = [
        checks.Error(
            f"Unknown OPTIONS key {key!r}: ThreadPoolBackend would ignore it.",
            hint="Known keys: " + ", ".join(DEFAULT_OPTIONS) + ".",
            id=E_UNKNOWN_OPTION,
        )
        for key in options
        if key not in DEFAULT_OPTIONS
    ]
    values = {**DEFAULT_OPTIONS, **options}
    if not _is_int(values["WORKERS"]) or values["WORKERS"] < 1:
        errors.append(
            checks.Error(
                f"WORKERS must be an int of at least 1, not {values['WORKERS']!r}.",
                hint="Set OPTIONS['WORKERS'] to the worker threads per queue.",
                id=E_WORKERS,
            )
        )
    queue_workers = values["QUEUE_WORKERS"]
    known_queues = set(queues)
    if not isinstance(queue_workers, Mapping):
        errors.append(
            checks.Error(
                f"QUEUE_WORKERS must be a dict, not {type(queue_workers).__name__}.",
                hint="Map queue names to worker counts: {'emails': 1}.",
                id=E_QUEUE_WORKERS,
            )
        )
    else:
        for name, count in queue_workers.items():
            if known_queues and name not in known_queues:
                errors.append(
                    checks.Error(
                        f"QUEUE_WORKERS names {name!r}, which is not in QUEUES.",
                        hint="QUEUES: " + ", ".join(sorted(known_queues)) + ".",
                        id=E_QUEUE_WORKERS,
                    )
                )
            if not _is_int(count) or count < 1:
                errors.append(
                    checks.Error(
                        f"QUEUE_WORKERS[{name!r}] must be an int of at least 1, "
                        f"not {count!r}.",
                        hint="Give each queue one worker or more.",
                        id=E_QUEUE_WORKERS,
                    )
                )
    if not _is_int(values["MAX_RESULTS"]) or values["MAX_RESULTS"] < 1:
        errors.append(
            checks.Error(
                f"MAX_RESULTS must be an int of at least 1, not "
                f"{values['MAX_RESULTS']!r}.",
                hint="It bounds how many finished results are kept in memory.",
                id=E_MAX_RESULTS,
            )
        )
    ttl = values["RESULT_TTL"]
    if not (_is_int(ttl) or isinstance(ttl, float)) or not ttl > 0:
        errors.append(
            checks.Error(
                f"RESULT_TTL must be a number of seconds above 0, not {ttl!r}.",
                hint="It bounds how long a finished result is kept in memory.",
                id=E_RESULT_TTL,
            )
        )
    if not isinstance(values["ENQUEUE_ON_COMMIT"], bool):
        errors.append(
            checks.Error(
                f"ENQUEUE_ON_COMMIT must be a bool, not "
                f"{values['ENQUEUE_ON_COMMIT']!r}.",
                hint="Set it to True (the default) or False.",
                id=E_ENQUEUE_ON_COMMIT,
            )
        )
    database = values["DATABASE"]
    if not isinstance(database, str) or database not in django_settings.DATABASES:
        errors.append(
            checks.Error(
                f"DATABASE must name an alias in DATABASES, not {database!r}.",
                hint="Aliases: " + ", ".join(django_settings.DATABASES) + ".",
                id=E_DATABASE,
            )
        )
    elif not errors:
        errors += sqlite_warnings(database, values, known_queues)
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

    @classmethod
    def from_params(cls, options: Any, queues: Iterable[str]) -> PoolOptions:
        errors = [m for m in option_errors(options, queues) if m.is_serious()]
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
        )

    def workers_for(self, queue_name: str) -> int:
        return self.queue_workers.get(queue_name, self.workers)
