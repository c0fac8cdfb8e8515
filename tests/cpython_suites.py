"""CPython's own tests of threads and thread pools, run against django_thread.

``python -m tests.cpython_suites SUITE`` runs one suite of the interpreter's
``Lib/test`` with ``django_thread``'s classes in place of the stdlib's, and
prints its counts as JSON on the last line (``tests/test_cpython_suites.py``
runs each suite in a process of its own and checks them).

How our classes get in, without replacing anything in ``threading`` or
``concurrent.futures`` (``threading``'s own ``_MainThread`` and
``_DummyThread`` call ``Thread.__init__`` by name, and no user's process
has such a patch): the test modules are imported with a ``__builtins__`` of
their own whose ``__import__`` hands *them*, and only them, a stand-in for
``threading`` (``Thread`` and ``Timer`` are ours) or for
``concurrent.futures`` (``ThreadPoolExecutor`` is ours). Everything else
reads and writes through to the real module, so a test that swaps
``threading.excepthook`` swaps the real one. A test that starts a child
interpreter with ``-c`` code gets the same stand-ins in the child, through
the same import hook (see :func:`run_child_code`), whether the test starts
it with ``assert_python_ok``/``_failure`` or ``subprocess.Popen``. Classes the modules
define at import time, such as ``TestThread(threading.Thread)``, subclass
ours.

Django is configured first, with ``django_thread`` installed and SQLite, as
a project would be, and with ``LOGGING`` for the ``django_thread`` logger, as
a project has: a few tests assert that the interpreter prints nothing at
exit while a pool still has work, where django_thread logs one WARNING
saying what exit waits for (docs/topics/processes.rst). Without any logging
configuration Python's last-resort handler would print that record on
stderr; here the project's handler takes it, and nothing else changes.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import json
import re
import subprocess
import sys
import types
import unittest
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Each suite: the Lib/test modules it loads and the TestCase classes it runs
#: (by name, or every class that satisfies the predicate, see _select).
SUITES: dict[str, dict[str, Any]] = {
    "concurrent_futures": {
        # Its helpers (util, executor) are imported with the stand-ins too.
        "package": ["test.test_concurrent_futures"],
        "modules": [
            f"test.test_concurrent_futures.{name}"
            for name in (
                "test_thread_pool",
                "test_shutdown",
                "test_init",
                "test_wait",
                "test_as_completed",
            )
        ],
        # Every thread-pool case: the classes built on the suite's
        # ThreadPoolMixin (its executor_type is our class, see _substitutes).
        "classes": "ThreadPoolMixin",
    },
    "threading": {
        "modules": ["test.test_threading"],
        "classes": [
            "ThreadTests",
            "TimerTests",
            "ThreadingExceptionTests",
            "ExceptHookTests",
        ],
    },
}

#: Cases that cannot pass with our classes, by test id, with the reason.
#: Excluded by name: the run fails if one of them no longer exists, so that
#: the list never outlives its reason.
EXCLUDED: dict[str, str] = {
    "test.test_threading.ThreadTests.test_finalize_with_trace": (
        "Its deadlock-killer is a daemon Thread that sleeps 2 s, then ends the "
        "process with status 2. A django_thread Thread, daemon or not, is asked "
        "to stop and joined at exit for up to DJANGO_THREAD_STOP_TIMEOUT (README, "
        "'At interpreter exit'), so exit waits for the killer, which fires."
    ),
}


def configure_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django_thread"],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": ":memory:",
                }
            },
            USE_TZ=True,
            LOGGING={
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"project": {"class": "logging.NullHandler"}},
                "loggers": {
                    "django_thread": {"handlers": ["project"], "propagate": False}
                },
            },
        )
        django.setup()


class _Standin(types.ModuleType):
    """A module that is ``real`` except for the ``overrides``.

    Reads of other names come from ``real``, and writes go to it, so that
    patching the stand-in (``support.swap_attr(threading, "excepthook", ...)``)
    patches the module the stdlib itself reads.
    """

    def __init__(self, real: types.ModuleType, overrides: dict[str, Any]) -> None:
        super().__init__(real.__name__, real.__doc__)
        vars(self).update(overrides)
        object.__setattr__(self, "_standin_real", real)
        object.__setattr__(self, "_standin_overrides", frozenset(overrides))

    def __getattr__(self, name: str) -> Any:
        return getattr(vars(self)["_standin_real"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in vars(self)["_standin_overrides"]:
            object.__setattr__(self, name, value)
        else:
            setattr(vars(self)["_standin_real"], name, value)

    def __delattr__(self, name: str) -> None:
        if name in vars(self)["_standin_overrides"]:
            object.__delattr__(self, name)
        else:
            delattr(vars(self)["_standin_real"], name)


def _substitutes() -> dict[str, Any]:
    """Dotted names the test modules import, and what they get instead."""
    import concurrent.futures
    import threading

    import django_thread

    threading_standin = _Standin(
        threading, {"Thread": django_thread.Thread, "Timer": django_thread.Timer}
    )
    futures_standin = _Standin(
        concurrent.futures,
        {"ThreadPoolExecutor": django_thread.ThreadPoolExecutor},
    )
    from test.support import script_helper

    return {
        "threading": threading_standin,
        "concurrent.futures": futures_standin,
        # `from concurrent import futures`
        "concurrent": _Standin(sys.modules["concurrent"], {"futures": futures_standin}),
        # Child interpreters run the test's -c code with these same stand-ins.
        "subprocess": _Standin(subprocess, {"Popen": _popen_in_child}),
        "test.support.script_helper": _Standin(
            script_helper,
            {
                "assert_python_ok": _in_child(script_helper.assert_python_ok),
                "assert_python_failure": _in_child(script_helper.assert_python_failure),
            },
        ),
    }


def _builtins_importing(substitutes: dict[str, Any]) -> dict[str, Any]:
    """A ``__builtins__`` whose ``import`` statements get the stand-ins."""
    real_import = builtins.__import__

    def substituting_import(
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        module = real_import(name, globals, locals, fromlist, level)
        if level or (not fromlist and "." in name):
            return module  # relative imports, and `import a.b` (binds `a`)
        return substitutes.get(name, module)

    namespace = dict(vars(builtins))
    namespace["__import__"] = substituting_import
    return namespace


class _SubstitutingLoader(importlib.machinery.SourceFileLoader):
    namespace: dict[str, Any]

    def exec_module(self, module: types.ModuleType) -> None:
        vars(module)["__builtins__"] = self.namespace
        super().exec_module(module)


class _SubstitutingFinder(importlib.abc.MetaPathFinder):
    """Imports the named test modules with :func:`_builtins_importing`."""

    def __init__(self, names: Sequence[str], namespace: dict[str, Any]) -> None:
        self.names = set(names)
        self.namespace = namespace

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not any(
            fullname == name or fullname.startswith(name + ".") for name in self.names
        ):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        loader = _SubstitutingLoader(fullname, spec.origin)
        loader.namespace = self.namespace
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=loader
        )


#: Child code that names none of the substituted classes runs as written:
#: test_import_from_another_thread checks that ``threading`` is not imported
#: before its code runs, and configuring Django imports it.
_NAMES_A_STANDIN = re.compile(r"\b(Thread|Timer|ThreadPoolExecutor)\b")


def _child_args(args: Sequence[Any]) -> list[Any]:
    """A child interpreter's arguments, its ``-c`` code run by run_child_code."""
    args = list(args)
    at = args.index("-c") + 1 if "-c" in args else None
    if at is not None and _NAMES_A_STANDIN.search(args[at]):
        args[at] = (
            f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
            "from tests.cpython_suites import run_child_code; "
            f"run_child_code({args[at]!r})"
        )
    return args


def _in_child(assert_python: Callable[..., Any]) -> Callable[..., Any]:
    """``assert_python_ok``/``_failure`` with :func:`_child_args`."""

    def run(*args: Any, **env_vars: Any) -> Any:
        return assert_python(*_child_args(args), **env_vars)

    return run


def _popen_in_child(args: Any, *rest: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen``, with :func:`_child_args` for this interpreter."""
    if isinstance(args, list) and args and args[0] == sys.executable:
        args = _child_args(args)
    return subprocess.Popen(args, *rest, **kwargs)


def run_child_code(code: str) -> None:
    """Run a test's ``-c`` code as ``__main__``, with the stand-ins."""
    configure_django()
    main = sys.modules["__main__"]
    vars(main)["__builtins__"] = _builtins_importing(_substitutes())
    exec(compile(code, "<string>", "exec"), vars(main))


def _select(suite: dict[str, Any], modules: list[types.ModuleType]) -> list[type]:
    wanted = suite["classes"]
    classes = []
    for module in modules:
        for name, value in sorted(vars(module).items()):
            if not (
                isinstance(value, type)
                and issubclass(value, unittest.TestCase)
                and value.__module__ == module.__name__
            ):
                continue
            if isinstance(wanted, list):
                if name in wanted:
                    classes.append(value)
            elif any(base.__name__ == wanted for base in value.__mro__):
                classes.append(value)
    return classes


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _classes_under_test(
    modules: list[types.ModuleType], classes: list[type]
) -> list[str]:
    seen = set()
    for module in modules:
        namespace = vars(module)
        if "threading" in namespace:
            seen.add(_qualified(namespace["threading"].Thread))
            seen.add(_qualified(namespace["threading"].Timer))
        if "futures" in namespace:
            seen.add(_qualified(namespace["futures"].ThreadPoolExecutor))
        for name in ("TestThread", "ThreadRunFail"):
            if name in namespace:
                # The first class of the stdlib's that it inherits from.
                seen.add(
                    _qualified(
                        next(
                            base
                            for base in namespace[name].__mro__[1:]
                            if base.__module__ != module.__name__
                        )
                    )
                )
    for cls in classes:
        if hasattr(cls, "executor_type"):
            seen.add(_qualified(cls.executor_type))
    return sorted(seen)


def run_suite(name: str) -> dict[str, Any]:
    configure_django()
    from test import support

    support.verbose = False  # as regrtest without -v: no chatter on stdout
    suite_spec = SUITES[name]
    substitutes = _substitutes()
    finder = _SubstitutingFinder(
        [*suite_spec.get("package", []), *suite_spec["modules"]],
        _builtins_importing(substitutes),
    )
    sys.meta_path.insert(0, finder)
    modules = [importlib.import_module(module) for module in suite_spec["modules"]]
    classes = _select(suite_spec, modules)
    if isinstance(suite_spec["classes"], list):
        missing = set(suite_spec["classes"]) - {cls.__name__ for cls in classes}
        assert not missing, f"no such TestCase in {name}: {missing}"

    loader = unittest.TestLoader()
    tests = unittest.TestSuite()
    found = set()
    for cls in classes:
        for test in loader.loadTestsFromTestCase(cls):
            found.add(test.id())
            if test.id() not in EXCLUDED:
                tests.addTest(test)
    prefixes = tuple(f"{module}." for module in suite_spec["modules"])
    unknown = {test_id for test_id in EXCLUDED if test_id.startswith(prefixes)} - found
    assert not unknown, f"excluded cases that do not exist: {unknown}"

    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(tests)
    return {
        "suite": name,
        "selected": tests.countTestCases(),
        "excluded": sorted(set(EXCLUDED) & found),
        "run": result.testsRun,
        "failures": [test.id() for test, _ in result.failures],
        "errors": [test.id() for test, _ in result.errors],
        "skipped": [[test.id(), reason] for test, reason in result.skipped],
        "expected_failures": [test.id() for test, _ in result.expectedFailures],
        "unexpected_successes": [test.id() for test in result.unexpectedSuccesses],
        # What the tests' own names resolve to: proof that the stand-ins
        # reached them.
        "classes_under_test": _classes_under_test(modules, classes),
    }


if __name__ == "__main__":
    print(json.dumps(run_suite(sys.argv[1])))
