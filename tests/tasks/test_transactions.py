"""Transactions: enqueue waits for the commit; a leaked one is rolled back."""

from __future__ import annotations

import pytest
from django.db import transaction

from testproject.jobs.models import Record
from tests.tasks import tasks as tm
from tests.tasks.helpers import finished, recorded_signals

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_in_atomic_waits_for_commit(alias, configure):
    configure(DATABASE=alias)
    with transaction.atomic(using=alias):
        Record.objects.using(alias).create(name="committed-first")
        result = tm.count_records.enqueue(alias, "committed-first")
        assert result.status == tm.TaskResultStatus.READY
        assert result.enqueued_at is None
        with pytest.raises(tm.TaskResultDoesNotExist):
            result.refresh()
    assert finished(result).return_value == 1
    assert result.enqueued_at is not None


def test_enqueue_in_rolled_back_atomic_never_runs(alias, configure):
    configure(DATABASE=alias)
    with recorded_signals() as events:
        with transaction.atomic(using=alias):
            kept = tm.write_record.enqueue(alias, "kept")
            try:
                with transaction.atomic(using=alias):
                    dropped = tm.write_record.enqueue(alias, "dropped")
                    raise RuntimeError("roll back the savepoint")
            except RuntimeError:
                pass
        finished(kept)
    with pytest.raises(tm.TaskResultDoesNotExist):
        dropped.refresh()
    assert not [event for event in events if event[2] == dropped.id]
    assert not Record.objects.using(alias).filter(name="dropped").exists()


def test_enqueue_on_commit_can_be_turned_off(configure):
    configure(ENQUEUE_ON_COMMIT=False)
    with transaction.atomic():
        result = tm.add.enqueue(1, 2)
        assert result.enqueued_at is not None
        result.refresh()  # known before the commit
    assert finished(result).return_value == 3


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_atomic_on_another_database_does_not_defer(configure):
    configure(DATABASE="default")
    with transaction.atomic(using="postgres"):
        result = tm.add.enqueue(2, 3)
        assert result.enqueued_at is not None
    assert finished(result).return_value == 5


def test_leaked_transaction_is_rolled_back_and_the_worker_goes_on(
    alias, configure, opened_connections
):
    configure(WORKERS=1)
    leaked = finished(tm.leak_transaction.enqueue(alias, "leaked"))
    after = finished(tm.write_record.enqueue(alias, "after"))
    assert leaked.status == after.status == tm.TaskResultStatus.SUCCESSFUL
    assert leaked.worker_ids == after.worker_ids
    assert not Record.objects.using(alias).filter(name="leaked").exists()
    assert Record.objects.using(alias).filter(name="after").count() == 1
    assert opened_connections.still_open(alias) == 0
