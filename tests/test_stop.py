"""Graceful stop: ``Thread.stop()``, and every running Thread stopped at exit."""

from __future__ import annotations

import textwrap
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_thread import Thread, Timer
from django_thread.checks import check_settings
from tests.helpers import REPO_ROOT
from tests.processes import run_python


@pytest.mark.parametrize("value", [-1, "5", True, None, float("inf"), float("nan")])
def test_bad_stop_timeout_is_an_error_with_id_and_hint(value):
    with override_settings(DJANGO_THREAD_STOP_TIMEOUT=value):
        errors = check_settings()
        assert [e.id for e in errors] == ["django_thread.E006"]
        assert "DJANGO_THREAD_STOP_TIMEOUT" in errors[0].hint
        with pytest.raises(SystemCheckError, match="django_thread.E006"):
            call_command("check", databases=[])


@pytest.mark.parametrize("value", [0, 2, 0.5])
def test_stop_timeout_accepts_seconds(value):
    with override_settings(DJANGO_THREAD_STOP_TIMEOUT=value):
        assert check_settings() == []


def test_stop_ends_a_loop_that_waits_on_stopping():
    iterations = []

    class Loop(Thread):
        def run(self):
            while not self.stopping.is_set():
                iterations.append(1)
                self.stopping.wait(60)

    thread = Loop()
    thread.start()
    thread.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert iterations  # it really ran, and the stop woke its wait


def test_stop_cancels_a_timer_that_has_not_fired():
    fired = threading.Event()
    timer = Timer(60, fired.set)
    timer.start()
    timer.stop()
    timer.join(10)
    assert not timer.is_alive()
    assert not fired.is_set()
    assert timer.stopping.is_set()


EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, logging, os, sys, threading, time
    sys.path.insert(0, {root!r})
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["TESTPROJECT_DATABASE_URL"] = "sqlite:///" + {db!r}

    opened = []

    def say(line):  # one write(2) per line: threads print concurrently
        os.write(1, (line + "\\n").encode())

    def report():  # a plain atexit handler: runs after django_thread's hook
        say("still-open %d" % sum(1 for w in opened if w.connection is not None))

    atexit.register(report)

    import django
    from django.conf import settings
    django.setup()
    settings.DJANGO_THREAD_STOP_TIMEOUT = 0.5
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 600
    from django.core.management import call_command
    from django.db.backends.signals import connection_created
    call_command("migrate", verbosity=0)
    connection_created.connect(
        lambda connection, **kw: opened.append(connection)
        if threading.current_thread() is not threading.main_thread() else None,
        weak=False,
    )

    from django_thread import Thread, unit_of_work
    from testproject.jobs.models import Record

    class Poller(Thread):
        def run(self):
            while not self.stopping.is_set():
                with unit_of_work():
                    Record.objects.create(name="poll")
                    say("polled")
                self.stopping.wait(60)
            say("stopped")

    connected = threading.Event()

    class Stubborn(Thread):
        def run(self):
            Record.objects.count()
            say("stubborn")
            connected.set()
            time.sleep(30)  # never looks at self.stopping

    poller = Poller()  # not a daemon: exit would wait for it forever
    poller.start()
    if {stubborn}:
        Stubborn(name="stubborn", daemon=True).start()
        connected.wait()
    while Record.objects.count() < 1:
        time.sleep(0.01)
    """
)


@pytest.mark.parametrize("stubborn", [False, True], ids=["all-stop", "one-stubborn"])
def test_running_threads_are_stopped_and_joined_at_exit(tmp_path, stubborn):
    script = EXIT_SCRIPT.format(
        root=str(REPO_ROOT), db=str(tmp_path / "stop.sqlite3"), stubborn=stubborn
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.count("polled") == 1
    assert "stopped" in lines
    if stubborn:
        assert "stubborn" in lines
        assert "Thread stubborn did not stop within" in result.stderr
        # The stubborn daemon thread still holds its connection; it dies
        # with the process. The poller's was closed.
        assert lines[-1] == "still-open 1"
    else:
        assert "did not stop" not in result.stderr
        assert lines[-1] == "still-open 0"


def test_pending_timer_still_fires_at_exit_as_threading_timer_does(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys
        sys.path.insert(0, {root!r})
        os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
        os.environ["TESTPROJECT_DATABASE_URL"] = "sqlite:///" + {db!r}
        import django
        django.setup()
        from django.core.management import call_command
        call_command("migrate", verbosity=0)
        from django_thread import Timer
        from testproject.jobs.models import Record

        def fire():
            Record.objects.create(name="timer")
            print("fired", Record.objects.count(), flush=True)

        Timer(0.2, fire).start()  # not a daemon: exit waits for it
        """
    ).format(root=str(REPO_ROOT), db=str(tmp_path / "timer.sqlite3"))
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["fired 1"]
    assert "did not stop" not in result.stderr
