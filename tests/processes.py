"""Helpers for tests that run testproject in processes of their own."""

from __future__ import annotations

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
