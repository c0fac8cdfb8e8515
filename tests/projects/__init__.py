"""Projects the testing-support tests run in a fresh interpreter.

``settings`` is a project on SQLite's in-memory database, or on PostgreSQL
with persistent connections, and ``suite`` is its test module, written as
a project would write it, for pytest-django and for ``manage.py test``.
"""
