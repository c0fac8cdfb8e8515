"""The one table django_thread keeps: the leases of durable task workers.

django-tasks-db's ``DBTaskResult`` holds the tasks themselves; it has no
place to say that the process running a task is still alive. Each process
running durable tasks holds one lease, named by the worker id it writes in
``DBTaskResult.worker_ids`` when it claims a row, and renews it while it
runs tasks. A RUNNING row whose last worker id has no live lease belonged to
a process that died: another process puts it back in the queue (see
:mod:`django_thread.tasks.durable_engine`).
"""

from __future__ import annotations

from django.db import models


class WorkerLease(models.Model):
    """One process's claim to be alive, until ``expires_at``."""

    worker_id = models.CharField(max_length=64, primary_key=True)
    #: Where the worker runs, for the log line that names a lost worker.
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.worker_id} ({self.host}, pid {self.pid})"
