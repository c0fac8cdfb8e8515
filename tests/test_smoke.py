from django_thread import ThreadPoolExecutor, Thread
from testproject.jobs.models import Record


def test_executor_writes_rows(alias, opened_connections):
    def write(i):
        return Record.objects.using(alias).create(name="x", value=i).pk

    with ThreadPoolExecutor(max_workers=2) as executor:
        pks = list(executor.map(write, range(10)))
    assert len(set(pks)) == 10
    assert Record.objects.using(alias).count() == 10
    assert opened_connections.still_open() == 0
