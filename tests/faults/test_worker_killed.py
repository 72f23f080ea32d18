"""kill -9 a worker in the middle of 300 single jobs and a batch: every job succeeds once."""

import csv
import os
import signal
import time

import pytest
from django.test import override_settings

from predictions.models import BatchChunk, ChunkStatus, PredictionJob, Status
from tests import processes
from tests.builders import IRIS_FEATURES, in_process_predictions, iris_rows, make_version
from tests.faults import poison
from tests.faults.harness import (
    Stack,
    count_done,
    figures_for,
    iris_csv,
    pool_processes,
    result_lines,
    slow_forest_in_production,
    wait_until_finished,
)

SINGLE_JOBS = 300
BATCH_ROWS = 20_000


def submit_load(stack: Stack) -> tuple[list[str], dict[str, list[dict]], str]:
    """A batch job first (40 chunks), then 300 single jobs of 1 to 3 rows each."""
    status, batch = stack.api.submit_file(
        "rows.csv", iris_csv(BATCH_ROWS), id_column="row_id", priority="3"
    )
    assert status == 201, batch
    row_sets = [iris_rows(1 + i % 3, offset=i) for i in range(SINGLE_JOBS)]
    ids = stack.api.submit_many(row_sets)
    return ids, dict(zip(ids, row_sets, strict=True)), batch["id"]


def wait_for_progress(job_ids: list[str], at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (done := count_done(job_ids)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return done


def check_batch(batch_id: str) -> None:
    """Each input row exactly once in the result, with the model's own prediction."""
    header, *rows = csv.reader(result_lines(batch_id))
    assert header[:2] == ["row_id", "prediction"]
    assert sorted(row[0] for row in rows) == sorted(f"r{i}" for i in range(BATCH_ROWS))
    job = PredictionJob.objects.get(pk=batch_id)
    expected = in_process_predictions(job.version, iris_rows(BATCH_ROWS))
    assert [int(row[1]) for row in rows] == expected.tolist()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killing_the_worker_main_process_loses_and_repeats_nothing(stack: Stack) -> None:
    single_ids, rows_of, batch_id = submit_load(stack)
    all_ids = [*single_ids, batch_id]
    done_at_kill = wait_for_progress(all_ids, at_least=30)

    os.kill(stack.workers[0].pid, signal.SIGKILL)
    stack.workers[0].wait()
    time.sleep(1)
    stack.start_worker()
    seconds = wait_until_finished(all_ids, timeout=120)

    figures = figures_for(all_ids, rows_of, stack.api)
    figures.notes.update(done_at_kill=done_at_kill, recovered_in_s=round(seconds, 1))
    figures.report("kill -9 worker main process")
    figures.assert_zero()
    check_batch(batch_id)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killing_one_pool_process_loses_and_repeats_nothing(stack: Stack) -> None:
    single_ids, rows_of, batch_id = submit_load(stack)
    all_ids = [*single_ids, batch_id]
    done_at_kill = wait_for_progress(all_ids, at_least=30)

    victim = pool_processes(stack.workers[0])[0]
    os.kill(victim, signal.SIGKILL)
    seconds = wait_until_finished(all_ids, timeout=120)

    figures = figures_for(all_ids, rows_of, stack.api)
    figures.notes.update(done_at_kill=done_at_kill, recovered_in_s=round(seconds, 1))
    figures.report("kill -9 one pool process")
    figures.assert_zero()
    check_batch(batch_id)
    assert stack.workers[0].poll() is None  # the worker itself carried on


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_single_jobs_of_killed_pool_processes_run_again_within_their_short_lease(
    volatile_redis, iris_version
) -> None:
    # Batch leases far beyond the test, single jobs' 3 s (renewed while their micro-batch
    # runs): the jobs a killed micro-batch held must run again because their short lease
    # lapsed, not the task time limit's. A slow forest keeps micro-batches running long.
    slow_forest_in_production(1500)
    stack = Stack(volatile_redis.url, JOB_LEASE_SECONDS="600", SINGLE_JOB_LEASE_SECONDS="3")
    stack.start()
    try:
        row_sets = [iris_rows(1 + i % 3, offset=i) for i in range(60)]
        ids = stack.api.submit_many(row_sets)
        running = PredictionJob.objects.filter(pk__in=ids, status=Status.RUNNING)
        processes.wait_for(running.exists, 60, "a micro-batch scoring", interval=0.01)
        for victim in pool_processes(stack.workers[0]):
            os.kill(victim, signal.SIGKILL)
        seconds = wait_until_finished(ids, timeout=60)

        figures = figures_for(ids, dict(zip(ids, row_sets, strict=True)), stack.api)
        figures.notes.update(recovered_in_s=round(seconds, 1))
        figures.report("kill -9 pool processes, single jobs, batch lease 600 s")
        figures.assert_zero()
        assert PredictionJob.objects.filter(pk__in=ids, attempts__gt=1).exists()  # re-run
    finally:
        stack.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_batch_chunk_of_killed_pool_processes_runs_again_within_its_short_lease(
    volatile_redis, iris_version
) -> None:
    # The job's lease far beyond the test, chunks' 3 s (renewed while they score): the chunk
    # a killed process held must run again because its own lease lapsed, not the job's.
    slow_forest_in_production(1500)
    stack = Stack(
        volatile_redis.url,
        JOB_LEASE_SECONDS="600",
        CHUNK_LEASE_SECONDS="3",
        BATCH_CHUNK_ROWS=str(BATCH_ROWS // 2),
    )
    stack.start()
    try:
        status, batch = stack.api.submit_file("rows.csv", iris_csv(BATCH_ROWS), id_column="row_id")
        assert status == 201, batch
        chunks = BatchChunk.objects.filter(job_id=batch["id"])
        scoring = chunks.filter(status=ChunkStatus.RUNNING)
        processes.wait_for(scoring.exists, 60, "a chunk scoring", interval=0.01)
        for victim in pool_processes(stack.workers[0]):
            os.kill(victim, signal.SIGKILL)
        seconds = wait_until_finished([batch["id"]], timeout=60)

        job = PredictionJob.objects.get(pk=batch["id"])
        assert (job.status, job.error_code) == (Status.SUCCEEDED, ""), f"after {seconds:.1f} s"
        check_batch(batch["id"])  # each row once, as the model predicts it
        assert chunks.filter(attempts__gt=1).exists()  # a killed chunk ran again
        print(f"batch recovered {seconds:.1f} s after the kill")
    finally:
        stack.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_job_that_kills_its_worker_fails_alone(volatile_redis) -> None:
    # One job whose input crashes the model's process, among 40 that share its micro-batch:
    # they are lost with it once, then run again each on its own and succeed, while it
    # fails as worker_lost at MAX_ATTEMPTS. Re-run together, neighbours failed with it.
    with override_settings(UNPICKLE_EXTRA_ALLOWED=[poison.ALLOWED]):
        make_version(estimator=poison.fitted())
    stack = Stack(
        volatile_redis.url,
        UNPICKLE_EXTRA_ALLOWED=poison.ALLOWED,
        SINGLE_JOB_LEASE_SECONDS="3",
        MAX_ATTEMPTS="3",
    )
    stack.start(worker=False)  # all waiting when it starts, so they share micro-batches
    try:
        good = [iris_rows(1, offset=i) for i in range(40)]
        bad = [{**iris_rows(1)[0], IRIS_FEATURES[0]: poison.POISON}]
        ids = stack.api.submit_many([*good[:20], bad, *good[20:]])
        bad_id = ids.pop(20)
        stack.start_worker()
        seconds = wait_until_finished([*ids, bad_id], timeout=90)

        culprit = PredictionJob.objects.get(pk=bad_id)
        assert (culprit.status, culprit.error_code) == (Status.FAILED, "worker_lost")
        figures = figures_for(ids, dict(zip(ids, good, strict=True)), stack.api)
        figures.notes.update(finished_in_s=round(seconds, 1))
        figures.report("a job that kills its worker, among 40")
        figures.assert_zero()
        assert PredictionJob.objects.filter(pk__in=ids, attempts__gt=1).exists()  # lost once
    finally:
        stack.close()
