"""A real worker process runs what is sent after commit, and its result lands in the database."""

import pytest
from django.db import transaction
from django_celery_results.models import TaskResult

from mlsite.tasks import ping
from tests.processes import wait_for


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_after_commit_runs_and_its_result_is_stored(live_worker) -> None:
    sent = []
    with transaction.atomic():
        transaction.on_commit(lambda: sent.append(ping.delay("hello")))
        assert sent == []  # nothing leaves before the commit
    result = sent[0]
    assert result.get(timeout=20) == "hello"

    def stored() -> bool:
        return TaskResult.objects.filter(task_id=result.id, status="SUCCESS").exists()

    wait_for(stored, 10, "task result row")
    row = TaskResult.objects.get(task_id=result.id)
    assert row.task_name == "mlsite.tasks.ping"
    assert row.result == '"hello"'
    assert row.worker  # result_extended records which worker ran it
