"""README.rst's quick start, followed by a newcomer in a new project.

The test makes a project with ``startproject`` in a temporary directory and
writes README.rst's quick-start blocks into it (each names its file on its
first line). Then it does what the README says: ``manage.py check`` (a
warning fails it too), ``migrate``, ``runserver``, and the view, until the
thread's group and the task's exist. Nothing of testproject or of the test
settings is used. django_thread is on the path, as after ``pip install``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import django

from tests.doc_blocks import quick_start_blocks
from tests.helpers import REPO_ROOT
from tests.processes import run_python

#: What the README's settings block says to add on Django 5.2.
BACKPORT_NOTE = '# Django 5.2: also "django_tasks"'


def environment() -> dict[str, str]:
    """runserver's environment: run_python's, with the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def manage(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_python(
        args=["manage.py", *args],
        cwd=project,
        env={"PYTHONPATH": str(REPO_ROOT)},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def for_this_django(code: str) -> str:
    """On Django 5.2, what the blocks' comments say: the backport's names."""
    if django.VERSION >= (6, 0):
        return code
    if BACKPORT_NOTE in code:
        code += '\nINSTALLED_APPS += ["django_tasks"]'
    return code.replace("from django.tasks import", "from django_tasks import")


def new_project(tmp_path: Path) -> Path:
    started = run_python(
        args=["-m", "django", "startproject", "mysite"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    assert started.returncode == 0, started.stdout + started.stderr
    project = tmp_path / "mysite"
    blocks = quick_start_blocks()
    assert [match["file"] for _, match in blocks] == [
        "mysite/settings.py",
        "mysite/jobs.py",
        "mysite/views.py",
        "mysite/urls.py",
    ]
    assert BACKPORT_NOTE in blocks[0][0].code
    for block, match in blocks:
        path = project / match["file"]
        code = for_this_django(block.code) + "\n"
        if match["append"]:
            path.write_text(path.read_text() + "\n" + code)
        else:
            assert not path.exists(), f"{block} would overwrite {path}"
            path.write_text(code)
    return project


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_until_two_groups(server: subprocess.Popen[str], url: str) -> list[Any]:
    """GET the view until it counts the thread's group and the task's."""
    answers: list[Any] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "runserver ended"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answers.append(json.loads(response.read()))
        except urllib.error.URLError:  # not listening yet
            time.sleep(0.2)
            continue
        if answers[-1]["groups"] == 2:
            return answers
        time.sleep(0.2)
    raise AssertionError(f"the view never counted 2 groups: {answers}")


def test_the_quick_start_runs_in_a_new_project(tmp_path):
    project = new_project(tmp_path)
    checked = manage(project, "check", "--fail-level", "WARNING")
    assert "System check identified no issues (0 silenced)." in checked.stdout
    manage(project, "migrate")

    port = free_port()
    # As typed in a terminal, where Ctrl+C raises KeyboardInterrupt: a run
    # started in the background of a shell inherits SIGINT ignored.
    runserver = (
        "import runpy, signal, sys; "
        "signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"sys.argv = ['manage.py', 'runserver', '--noreload', '127.0.0.1:{port}']; "
        "runpy.run_path('manage.py', run_name='__main__')"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", runserver],
        cwd=project,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        answers = get_until_two_groups(server, f"http://127.0.0.1:{port}/groups/")
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl+C, as a user stops it
        output, _ = server.communicate(timeout=60)
    # Ctrl+C ends runserver with sys.exit(0): the exit drains the pools.
    assert server.returncode == 0, output
    assert "Traceback" not in output, output
    assert all(answer["task"] for answer in answers)

    names = manage(
        project,
        "shell",
        "-c",
        "from django.contrib.auth.models import Group; "
        "print(sorted(Group.objects.values_list('name', flat=True)))",
    )
    # The last line: Django 5.2+ first says what the shell imported.
    assert names.stdout.splitlines()[-1] == "['made by a task', 'made by a thread']"
