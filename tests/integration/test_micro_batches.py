"""Micro-batches of single jobs: flushed as soon as a pool process is free, not on a timer,
and one at a time.

The worker's flush timer is set to 30 s here, so only the flush-when-free path can finish
jobs within the test's deadlines.
"""

from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise

import pytest
from django.db.models import Max

from predictions.models import PredictionJob
from tests import processes
from tests.builders import iris_rows, make_version
from tests.faults.harness import Stack, count_done, figures_for, wait_until_finished

JOBS = 30


@pytest.fixture
def slow_timer_stack(private_redis: processes.RedisServer, transactional_db) -> Iterator[Stack]:
    make_version()
    running = Stack(private_redis.url, PREDICT_FLUSH_INTERVAL="30")
    try:
        yield running.start(worker=False, beat=False)
    finally:
        running.close()


@pytest.mark.django_db(transaction=True)
def test_waiting_jobs_go_in_a_few_batches_and_a_lone_job_at_once(slow_timer_stack) -> None:
    stack = slow_timer_stack
    rows = [iris_rows(1, offset) for offset in range(JOBS)]
    crowd = stack.api.submit_many(rows)  # queued while no worker runs
    stack.start_worker()

    wait_until_finished(crowd, timeout=20)
    assert count_done(crowd) == JOBS
    spans = _batch_spans(crowd)
    assert len(spans) <= JOBS // 3  # gathered while a micro-batch was being scored
    # PREDICT_FLUSHES_AT_ONCE is 1: each micro-batch starts after the one before it finished,
    # though the worker has two pool processes.
    for (_, finished), (started, _) in pairwise(spans):
        assert started >= finished

    lone = stack.api.submit_rows(iris_rows(1, JOBS))
    assert wait_until_finished([lone], timeout=10) < 2

    rows_of = {
        job: row for job, row in zip([*crowd, lone], [*rows, iris_rows(1, JOBS)], strict=True)
    }
    figures_for([*crowd, lone], rows_of, stack.api).assert_zero()


def _batch_spans(job_ids: list[str]) -> list[tuple[datetime, datetime]]:
    """(started, last finished) of each micro-batch, in order: a batch's jobs share started_at."""
    spans = (
        PredictionJob.objects.filter(pk__in=job_ids)
        .values("started_at")
        .annotate(finished=Max("finished_at"))
        .order_by("started_at")
    )
    return [(span["started_at"], span["finished"]) for span in spans]
