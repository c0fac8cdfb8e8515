"""Sphinx configuration: ``sphinx-build -W --keep-going -n -b html docs OUT``.

Autodoc imports django_thread, which needs configured Django settings: a
minimal project is configured here (SQLite in memory, no TASKS), which the
check-id table of ``_ext/django_thread_tables.py`` also runs its checks in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

settings.configure(
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        *(["django_tasks"] if django.VERSION < (6, 0) else []),
        "django_thread",
        # DURABLE's table: its checks (E115, W102) are shown in the reference.
        "django_tasks_db",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
)
django.setup()

import django_thread  # noqa: E402  (after django.setup())

project = "django-thread"
author = "django-thread contributors"
copyright = "django-thread contributors"
release = django_thread.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "django_thread_tables",
]
exclude_patterns = ["_build"]
# Every role and every cross-reference must resolve (-n): the names below
# are the standard library's and Django's, which these docs do not document
# and cannot link to without the network (no intersphinx).
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(concurrent|threading|typing|collections|types|django|asyncio"
        r"|contextvars|asgiref)\..*",
    ),
    (r"py:.*", r"(_F|_P|_T|T|P|Any|Callable|TracebackType|Future|Executor|TaskResult)"),
    (r"py:.*", r"_P\..*"),
    # Type variables and helper classes of signatures, internal by design.
    (r"py:class", r"django_thread\.\w+\.(_\w+|T|UnitOfWork|RequestThreadsApplication)"),
]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# The standard library's docstrings (submit, map) are not reStructuredText.
autodoc_inherit_docstrings = False

html_theme = "furo"
html_title = f"django-thread {release}"
html_static_path: list[str] = []
