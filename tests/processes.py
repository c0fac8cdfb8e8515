"""Helpers for tests that run testproject in processes of their own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from django.db import connections


def database_url(alias: str) -> str:
    """A URL for testproject's settings naming this alias's test database."""
    params = connections[alias].settings_dict
    if connections[alias].vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    scheme = "postgresql" if connections[alias].vendor == "postgresql" else "mysql"
    password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
    host = params["HOST"] or "localhost"
    port = f":{params['PORT']}" if params["PORT"] else ""
    if host.startswith("/"):
        return f"{scheme}://{params['USER']}{password}@/{params['NAME']}?host={host}"
    return f"{scheme}://{params['USER']}{password}@{host}{port}/{params['NAME']}"


#: What starts coverage in a process (see pyproject.toml).
COVERAGE_VARIABLES = {"COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"}


def run_python(
    script: str | None = None,
    timeout: float | None = 60,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    python: str = sys.executable,
    measured: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (``python -c``), or ``python ARGS``, in a fresh interpreter.

    Its environment is the test run's, less its ``DJANGO_SETTINGS_MODULE``,
    so that the script's own choice of settings is the one that counts, and
    updated with ``env``. ``measured=False`` leaves coverage out too, for a
    script that forks hundreds of children: coverage would save a data file
    from each. ``python`` is another interpreter (a virtualenv's); ``cwd``
    the directory it starts in. The output is captured, as text.
    """
    left_out = {"DJANGO_SETTINGS_MODULE"} | (set() if measured else COVERAGE_VARIABLES)
    environ = {k: v for k, v in os.environ.items() if k not in left_out}
    environ.update(env or {})
    command = [python, *(["-c", script] if script is not None else []), *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        cwd=cwd,
    )


class ServerProcess:
    """A server run as ``python -m ARGS`` from ``root``, its output read as it comes.

    ``env`` is added to the test run's environment, less its
    ``DJANGO_SETTINGS_MODULE``; the repository is on the path.
    """

    def __init__(self, args: list[str], env: dict[str, str], root: str) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        environ["PYTHONPATH"] = root
        environ.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=root,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the output, within 30 s."""
        deadline = time.monotonic() + 30
        while True:
            found = [m for m in map(re.compile(pattern).search, self.lines) if m]
            if len(found) >= count:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in:\n{self.output()}")
            time.sleep(0.02)

    def stop(self, how: signal.Signals, timeout: float) -> int | None:
        """Send ``how`` (the server's graceful stop); SIGKILL after ``timeout``.

        The exit status, or None when it had to be killed.
        """
        if self.process.poll() is None:
            self.process.send_signal(how)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode
