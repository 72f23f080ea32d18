"""The result backend writes through a database restart and never stops a worker over a row."""

import pytest
from django.db import OperationalError
from django_celery_results.models import TaskResult

from mlsite.celery import app
from tests.outages import fails_at_call

# The retry closes the connection, as after a restart: outside a test transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def test_a_result_written_on_a_closed_connection_is_written_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = app.backend
    monkeypatch.setattr(backend, "_store_result", fails_at_call(backend._store_result))
    backend.store_result("after-a-restart", {"rows": 1}, "SUCCESS")
    assert TaskResult.objects.get(task_id="after-a-restart").status == "SUCCESS"


def test_a_revoked_task_whose_row_cannot_be_written_raises_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def database_away(*args: object, **kwargs: object) -> None:
        raise OperationalError("the connection is closed")

    backend = app.backend
    monkeypatch.setattr(backend, "_store_result", database_away)
    # What a worker's consumer does with a message that arrived expired: had it raised, the
    # worker would have stopped.
    backend.mark_as_revoked("expired-task", "expired")
    assert not TaskResult.objects.filter(task_id="expired-task").exists()
