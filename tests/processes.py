"""Helpers for tests that run testproject in processes of their own."""

from __future__ import annotations

import os
import subprocess
import sys

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


def run_python(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter; it configures Django itself.

    The test run's ``DJANGO_SETTINGS_MODULE`` is left out of its environment,
    so that the script's own choice of settings is the one that counts.
    """
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
