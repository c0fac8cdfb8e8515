"""Database settings from a URL, so the project can run on any server.

``sqlite:///path``, ``postgresql://user:password@host:port/name`` (or a
socket directory in ``?host=``) and ``mysql://user:password@host:port/name``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ENGINES = {
    "sqlite": "django.db.backends.sqlite3",
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
    "mariadb": "django.db.backends.mysql",
}


def database_from_url(url: str, **extra: Any) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ENGINES:
        raise ValueError(f"Unsupported database URL scheme in {url!r}")
    engine = ENGINES[parts.scheme]
    if engine.endswith("sqlite3"):
        return {"ENGINE": engine, "NAME": unquote(parts.path[1:]), **extra}
    query = parse_qs(parts.query)
    return {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.get("host", [parts.hostname or ""])[0],
        "PORT": str(parts.port or ""),
        **extra,
    }
