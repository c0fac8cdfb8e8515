"""A badly typed setting never costs work where system checks do not run.

A plain script (or a gunicorn worker) runs no system checks, so a bad value
reaches the exit hook and the workers' start. Each script here submits six
jobs that write a row and exits without waiting; every row must be there,
and the bad value logged once, naming the check that reports it.
"""

from __future__ import annotations

import textwrap

import pytest

from testproject.jobs.models import Record
from tests.helpers import REPO_ROOT
from tests.processes import database_url, run_python

SCRIPT = """
import logging, os, sys, time
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.process_settings"
os.environ["TESTPROJECT_DATABASE_URL"] = {url!r}
import django
from django.conf import settings
django.setup()
# testproject logs django_thread to stderr; say the level and logger too.
(handler,) = logging.getLogger("django_thread").handlers
handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
setattr(settings, {name!r}, {value!r})

from django_thread import ThreadPoolExecutor
from testproject.jobs.models import Record

def job(i):
    time.sleep(0.02)
    Record.objects.create(name={row!r}, value=i)

executor = ThreadPoolExecutor(max_workers=1)
for i in range(6):
    executor.submit(job, i)
# No shutdown(): the interpreter exits with work queued.
"""


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("DJANGO_THREAD_STOP_TIMEOUT", "5", "django_thread.E006"),
        ("DJANGO_THREAD_STOP_TIMEOUT", None, "django_thread.E006"),
        # A truthy string: read as it is, it would cancel the queued jobs.
        ("DJANGO_THREAD_CANCEL_AT_EXIT", "False", "django_thread.E004"),
        ("DJANGO_THREAD_PERSISTENT_CONNECTIONS", "no", "django_thread.E007"),
    ],
    ids=["stop-timeout-str", "stop-timeout-none", "cancel-str", "persistent-str"],
)
def test_bad_setting_loses_no_work_and_is_logged_once(alias, name, value, check_id):
    row = f"bad-{name}"
    script = textwrap.dedent(SCRIPT).format(
        root=str(REPO_ROOT), url=database_url(alias), name=name, value=value, row=row
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert Record.objects.using(alias).filter(name=row).count() == 6, result.stderr
    warnings = [line for line in result.stderr.splitlines() if name in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("WARNING django_thread ")
    assert check_id in warnings[0]
    assert "Traceback" not in result.stderr
