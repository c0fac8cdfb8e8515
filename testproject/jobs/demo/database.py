"""The database under the demo: settings per block, and killing or counting
connections, on the server when there is one."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection

from testproject.jobs.demo.pools import Pool


class Database:
    """The demo's database: settings per block, and killing or counting
    connections, on the server when there is one."""

    def __init__(self) -> None:
        self.settings = connection.settings_dict
        self.vendor = connection.vendor
        self.application_name = f"django_thread demo {os.getpid()}"
        if self.is_postgresql:
            # Tag the demo's connections, so that it only kills its own.
            options = self.settings.setdefault("OPTIONS", {})
            options["application_name"] = self.application_name
            connection.close()

    @property
    def is_postgresql(self) -> bool:
        return self.vendor == "postgresql"

    @contextmanager
    def settings_for_block(self, **overrides: Any) -> Iterator[None]:
        """Change this alias's settings for every thread (wrappers share them)."""
        saved = {key: self.settings.get(key) for key in overrides}
        connection.close()
        self.settings.update(overrides)
        try:
            yield
        finally:
            connection.close()
            self.settings.update(saved)

    def kill(self, pool: Pool, pids: list[int | None]) -> None:
        """End each worker's connection, as a server restart would."""
        if not self.is_postgresql:
            # No server: close the driver connection behind Django's back,
            # which leaves the wrapper as a dropped connection leaves it.
            for wrapper in pool.connections.still_open():
                wrapper.connection.close()
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid = ANY(%s) AND application_name = %s "
                "AND datname = current_database()",
                [[pid for pid in pids if pid is not None], self.application_name],
            )
        self.wait_for_server_count(0)

    def server_count(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND datname = current_database() AND pid <> pg_backend_pid()",
                [self.application_name],
            )
            return int(cursor.fetchone()[0])

    def wait_for_server_count(self, expected: int, timeout: float = 5.0) -> int:
        """The server ends a backend shortly after its client leaves: poll."""
        deadline = time.monotonic() + timeout
        while (count := self.server_count()) != expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return count

    def count_left_open(self, left_open: list[Any]) -> int:
        if not self.is_postgresql:
            return len(left_open)
        return self.wait_for_server_count(len(left_open))
