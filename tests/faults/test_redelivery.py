"""At-least-once delivery: a message delivered twice, or again while it runs, scores once."""

import threading
import time

import pytest
from celery import Celery
from kombu import Connection

from predictions.models import PredictionJob
from predictions.submission import TASK_FOR_KIND
from tests.builders import iris_rows
from tests.faults.harness import (
    Stack,
    figures_for,
    iris_csv,
    result_lines,
    wait_until_finished,
)

BATCH_ROWS = 30_000


def deliver_again(stack: Stack, job_ids: list[str]) -> None:
    """Publish each job's current message a second time: same task, same task id."""
    sender = Celery(broker=stack.redis_url, set_as_current=False)
    for job in PredictionJob.objects.filter(pk__in=job_ids):
        queue = "predict" if job.kind == "single" else "batch"
        sender.send_task(
            TASK_FOR_KIND[job.kind], args=[str(job.pk)], task_id=job.task_id, queue=queue
        )


def restore_unacked(redis_url: str) -> int:
    """What Redis does once a message's visibility timeout passes: put it back in its queue.

    kombu's own restore, run as a consumer whose visibility timeout is 0, so every message a
    worker holds unacked (running, or waiting in its prefetch) is delivered again now.
    """
    with Connection(redis_url, transport_options={"visibility_timeout": 0}) as connection:
        channel = connection.default_channel
        client = channel.client
        held = client.zcard(channel.unacked_index_key)
        channel.qos.restore_visible(num=10_000)
        return held


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_message_delivered_twice_scores_its_job_once(stack: Stack) -> None:
    row_sets = [iris_rows(2, offset=i) for i in range(100)]
    status, batch = stack.api.submit_file("rows.csv", iris_csv(5_000), id_column="row_id")
    assert status == 201
    ids = [*stack.api.submit_many(row_sets), batch["id"]]
    deliver_again(stack, ids)
    seconds = wait_until_finished(ids, timeout=60)
    time.sleep(2)  # let the second copies arrive and be skipped

    figures = figures_for(ids, dict(zip(ids, row_sets, strict=False)), stack.api)
    figures.notes.update(finished_in_s=round(seconds, 1))
    figures.report("every message delivered twice")
    figures.assert_zero()
    assert len(result_lines(batch["id"])) == 5_000 + 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_messages_redelivered_while_their_tasks_run_score_once(stack: Stack) -> None:
    # Restore unacked messages all along, from the first submission on, so the test does not
    # depend on how fast the worker is: whatever it holds at any moment is delivered again.
    restored = 0
    stop = threading.Event()

    def keep_restoring() -> None:
        nonlocal restored
        while not stop.is_set():
            restored += restore_unacked(stack.redis_url)  # as if each had outlived the timeout
            time.sleep(0.05)

    restorer = threading.Thread(target=keep_restoring, daemon=True)
    restorer.start()
    try:
        status, batch = stack.api.submit_file("rows.csv", iris_csv(BATCH_ROWS), id_column="row_id")
        assert status == 201
        row_sets = [iris_rows(1, offset=i) for i in range(200)]
        ids = [batch["id"], *stack.api.submit_many(row_sets)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not restored:
            time.sleep(0.05)
    finally:
        stop.set()
        restorer.join()
    seconds = wait_until_finished(ids, timeout=60)
    time.sleep(2)

    figures = figures_for(ids, dict(zip(ids[1:], row_sets, strict=True)), stack.api)
    figures.notes.update(messages_redelivered=restored, finished_in_s=round(seconds, 1))
    figures.report("messages redelivered while running (visibility timeout)")
    figures.assert_zero()
    assert restored > 0
    job = PredictionJob.objects.get(pk=batch["id"])
    assert job.rows_done == job.rows_total == BATCH_ROWS
    assert len(result_lines(batch["id"])) == BATCH_ROWS + 1
