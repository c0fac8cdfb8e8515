"""The reference tables, generated from the code's own tables so they cannot drift.

Three directives:

``.. django-thread-settings::``
    One entry per setting of ``django_thread.conf.DjangoThreadConf``, with its
    default and type, and the check that guards it (``django_thread.checks``).
``.. django-thread-task-options::``
    One entry per key of ``django_thread.tasks.options.OPTIONS``, with its
    default, what a valid value is, and its check id.
``.. django-thread-modules::``
    Every module of the package, with its docstring's first line.
``.. django-thread-checks::``
    Every check id that ``django_thread.checks`` and
    ``django_thread.tasks.options`` define, with the messages the checks
    really produce: each id is triggered below with a bad value and the check
    functions are run, so a message reads exactly as ``manage.py check``
    prints it.

The first two take the prose of each entry as their content: a line holding
the name alone, then the indented prose. The build fails when the content
and the code disagree (a setting without prose, prose for a setting that no
longer exists), and when a check id has no example below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

CHECK_ID = re.compile(r"^django_thread\.[EW]\d{3}$")


def entries(content: StringList, what: str) -> dict[str, list[str]]:
    """The directive's content: an unindented name, then its indented prose."""
    found: dict[str, list[str]] = {}
    name = None
    for line in content:
        if line and not line[0].isspace():
            name = line.strip()
            if name in found:
                raise ExtensionError(f"{what} {name} is described twice")
            found[name] = []
        elif name is None:
            if line.strip():
                raise ExtensionError(f"{what} prose before any name: {line!r}")
        else:
            found[name].append(line[3:] if line.startswith("   ") else line.strip())
    return found


def require_same(code: list[str], prose: dict[str, list[str]], what: str) -> None:
    missing = [name for name in code if name not in prose]
    stale = [name for name in prose if name not in code]
    if missing or stale:
        raise ExtensionError(
            f"The docs and the code disagree on the {what}: "
            f"not described {missing}, described but not in the code {stale}"
        )


class GeneratedDirective(SphinxDirective):
    has_content = True

    def lines(self) -> Iterator[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        source = StringList()
        for line in self.lines():
            source.append(line, self.get_source_info()[0], self.lineno)
        self.state.nested_parse(source, self.content_offset, container)
        return container.children


class SettingsDirective(GeneratedDirective):
    def lines(self) -> Iterator[str]:
        from django_thread import checks
        from django_thread.conf import DjangoThreadConf

        defaults = DjangoThreadConf._meta.defaults
        prose = entries(self.content, "setting")
        require_same(list(defaults), prose, "settings")
        guards = {
            **checks.BOOLEAN_SETTINGS,
            "DJANGO_THREAD_STOP_TIMEOUT": checks.STOP_TIMEOUT,
        }
        for name, default in defaults.items():
            yield f".. confval:: {name}"
            yield f"   :type: ``{type(default).__name__}``"
            yield f"   :default: ``{default!r}``"
            yield ""
            for line in prose[name]:
                yield f"   {line}"
            yield ""
            if name in guards:
                yield f"   A wrong value is reported by :check:`{guards[name]}`."
                yield ""


class TaskOptionsDirective(GeneratedDirective):
    def lines(self) -> Iterator[str]:
        from django_thread.tasks.options import OPTIONS

        prose = entries(self.content, "Tasks option")
        require_same(list(OPTIONS), prose, "Tasks backend OPTIONS")
        for name, spec in OPTIONS.items():
            yield f".. taskoption:: {name}"
            yield ""
            yield f"   :Default: ``{spec.default!r}``"
            yield f"   :Valid: {spec.expected}, else :check:`{spec.check_id}`"
            yield ""
            for line in prose[name]:
                yield f"   {line}"
            yield ""


# -- Check ids, and the bad configurations that make each check speak. ------


def _settings_messages(**overrides: Any) -> list[Any]:
    from django.test import override_settings

    from django_thread.checks import check_settings

    with override_settings(**overrides):
        return check_settings()


def _option_messages(options: Any, queues: list[str] | None = None) -> list[Any]:
    from django_thread.tasks.options import option_errors

    return option_errors("default", options, queues or ["default", "emails"])


def _app_not_installed() -> list[Any]:
    from django.conf import settings
    from django.test import override_settings

    from django_thread.tasks import ThreadPoolBackend

    backend = ThreadPoolBackend(
        "default", {"QUEUES": ["default"], "OPTIONS": {"WORKERS": 1}}
    )
    apps = [app for app in settings.INSTALLED_APPS if app != "django_thread"]
    with override_settings(INSTALLED_APPS=apps):
        return backend.check()


def _durable_without_tasks_db() -> list[Any]:
    from django.conf import settings
    from django.test import override_settings

    from django_thread.tasks.durable_checks import durable_errors

    apps = [app for app in settings.INSTALLED_APPS if app != "django_tasks_db"]
    with override_settings(INSTALLED_APPS=apps):
        return durable_errors("default", {"DURABLE": True})


def _durable_tables_missing() -> list[Any]:
    from django.test import override_settings

    from django_thread.tasks.durable_checks import check_durable_tables

    backend = "django_thread.tasks.ThreadPoolBackend"
    tasks = {"default": {"BACKEND": backend, "OPTIONS": {"DURABLE": True}}}
    with override_settings(TASKS=tasks):
        return check_durable_tables(databases=["default"])


#: Each returns check messages; together they must name every check id.
EXAMPLES: list[Callable[[], list[Any]]] = [
    lambda: _settings_messages(DJANGO_THREAD_SEND_SIGNALS="yes"),
    lambda: _settings_messages(DJANGO_THREAD_CLOSE_ON_ERROR=1),
    lambda: _settings_messages(DJANGO_THREAD_COPY_CONTEXT="no"),
    lambda: _settings_messages(DJANGO_THREAD_CANCEL_AT_EXIT=None),
    lambda: _settings_messages(DJANGO_THREAD_SEND_SIGNAL=True),
    lambda: _settings_messages(DJANGO_THREAD_STOP_TIMEOUT=-1),
    lambda: _settings_messages(DJANGO_THREAD_PERSISTENT_CONNECTIONS="on"),
    lambda: _settings_messages(DJANGO_THREAD_LOG_UNRETRIEVED_EXCEPTIONS="on"),
    lambda: _option_messages(["WORKERS", 4]),
    lambda: _option_messages({"WORKER": 4}),
    lambda: _option_messages({"WORKERS": 0}),
    lambda: _option_messages({"QUEUE_WORKERS": ["emails"]}),
    lambda: _option_messages({"QUEUE_WORKERS": {"reports": 1}}),
    lambda: _option_messages({"QUEUE_WORKERS": {"emails": 0}}),
    lambda: _option_messages({"MAX_RESULTS": 0}),
    lambda: _option_messages({"RESULT_TTL": 0}),
    lambda: _option_messages({"ENQUEUE_ON_COMMIT": "yes"}),
    lambda: _option_messages({"DATABASE": "replica"}),
    lambda: _option_messages({"PERSISTENT_CONNECTIONS": "yes"}),
    _app_not_installed,
    lambda: _option_messages({"DURABLE": "yes"}),
    lambda: _option_messages({"DURABLE": True, "POLL_INTERVAL": 0}),
    lambda: _option_messages({"DURABLE": True, "LEASE": 1}),
    lambda: _option_messages({"DURABLE": True, "MAX_ATTEMPTS": 0}),
    lambda: _option_messages({"POLL_INTERVAL": 2}),
    lambda: _option_messages({"DURABLE": True, "RESULT_TTL": 10}),
    _durable_without_tasks_db,
    _durable_tables_missing,
    # The docs' Django settings: SQLite "default" with no OPTIONS.
    lambda: _option_messages({"WORKERS": 2}),
]


def check_ids() -> list[str]:
    """Every check id the two modules define, as constants or table values."""
    from django_thread import checks
    from django_thread.tasks import options

    found = set(checks.BOOLEAN_SETTINGS.values())
    for module in (checks, options):
        found |= {
            value
            for value in vars(module).values()
            if isinstance(value, str) and CHECK_ID.match(value)
        }
    found |= {spec.check_id for spec in options.OPTIONS.values()}
    return sorted(found, key=lambda i: (".W" in i, i))


class ChecksDirective(GeneratedDirective):
    has_content = False

    def lines(self) -> Iterator[str]:
        messages: dict[str, list[Any]] = {}
        for example in EXAMPLES:
            for message in example():
                if message.id.startswith("django_thread."):
                    shown = messages.setdefault(message.id, [])
                    if (message.msg, message.hint) not in [
                        (m.msg, m.hint) for m in shown
                    ]:
                        shown.append(message)
        ids = check_ids()
        missing = [i for i in ids if i not in messages]
        unknown = [i for i in messages if i not in ids]
        if missing or unknown:
            raise ExtensionError(
                f"Check ids without an example in {__name__}.EXAMPLES: {missing}; "
                f"ids the examples produced that the code tables lack: {unknown}"
            )
        for check_id in ids:
            level = "Warning" if check_id.split(".")[1].startswith("W") else "Error"
            yield f".. check:: {check_id}"
            yield ""
            yield f"   {level}. For example:"
            yield ""
            for message in messages[check_id]:
                yield f"   - {literal(message.msg)}"
                if message.hint:
                    yield ""
                    yield f"     Hint: {literal(message.hint)}"
                yield ""


def literal(text: str) -> str:
    """A message as inline literal text (it may hold rst markup characters)."""
    return "``" + text.replace("`", "'") + "``"


class ModulesDirective(GeneratedDirective):
    """Every module of the package, with the first line of its docstring."""

    has_content = False

    def lines(self) -> Iterator[str]:
        # Read, not imported: the pytest plugin needs pytest, which the docs
        # do not.
        import ast
        from pathlib import Path

        import django_thread

        package = Path(django_thread.__file__).parent
        yield ".. list-table::"
        yield "   :header-rows: 1"
        yield ""
        yield "   * - File"
        yield "     - Its job"
        for path in sorted(package.rglob("*.py")):
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            summary = docstring.strip().splitlines()[0] if docstring else ""
            yield f"   * - ``{path.relative_to(package.parent)}``"
            yield f"     - {summary}"


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_object_type(
        "check", "check", indextemplate="pair: %s; system check", objname="check"
    )
    app.add_object_type(
        "taskoption",
        "taskoption",
        indextemplate="pair: %s; Tasks backend option",
        objname="Tasks backend option",
    )
    app.add_directive("django-thread-settings", SettingsDirective)
    app.add_directive("django-thread-task-options", TaskOptionsDirective)
    app.add_directive("django-thread-checks", ChecksDirective)
    app.add_directive("django-thread-modules", ModulesDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
