"""The reconciler: resend what stayed queued, re-run or fail what a lost worker held (a job,
a batch chunk)."""

import logging
from datetime import timedelta

import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.utils import timezone

from mlsite import broker, sending
from predictions import batching, reconcile, running, submission, tasks
from predictions.models import BatchChunk, ChunkStatus, PredictionJob, Status
from tests.base import make_user
from tests.builders import iris_rows, make_version
from tests.outages import fails_at_call

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_kept() -> object:
    """The broker's marker as this Redis run wrote it (a test changes it to play a Redis that
    restarted): each test starts with it, whatever Redis the suite runs on."""
    broker.mark_data_kept(broker.server_run())
    yield
    broker.mark_data_kept(broker.server_run())


@pytest.fixture
def job() -> PredictionJob:
    make_version()
    job, _ = submission.submit_rows(make_user(), "iris", iris_rows(1))
    return job


def later(seconds: float) -> timezone.datetime:
    return timezone.now() + timedelta(seconds=seconds)


@override_settings(RECONCILE_QUEUED_AFTER=60)
def test_a_job_queued_too_long_is_sent_again_with_a_fresh_task_id(job) -> None:
    assert reconcile.reconcile(now=later(30)).resent == 0
    outcome = reconcile.reconcile(now=later(61))
    assert outcome.resent == 1
    assert PredictionJob.objects.get(pk=job.pk).task_id != job.task_id


@pytest.mark.postgres  # the database does the date arithmetic, as each one does it
@override_settings(RECONCILE_QUEUED_AFTER=60)
def test_resends_of_a_job_that_stays_queued_back_off(job) -> None:
    # A stalled worker: the job's messages wait; each resend waits as long as the job had.
    start = timezone.now()
    PredictionJob.objects.filter(pk=job.pk).update(created_at=start, enqueued_at=start)
    sent_at = []
    for second in range(0, 2400, 10):
        if reconcile.reconcile(now=start + timedelta(seconds=second)).resent:
            sent_at.append(second)
    # Stale past 60 s (a pass every 10 s sees it at 70), then twice as long each time, and
    # never more than 600 s apart.
    assert sent_at == [70, 140, 280, 560, 1120, 1720, 2320]


@override_settings(RECONCILE_QUEUED_AFTER=60)
def test_jobs_still_backing_off_do_not_hide_a_due_one(job, monkeypatch) -> None:
    monkeypatch.setattr(reconcile, "BATCH_LIMIT", 2)  # a pass's window
    start = timezone.now()
    backing_off = [submission.submit_rows(job.owner, "iris", iris_rows(1))[0] for _ in range(2)]
    # Sent last 100 s ago after a wait of 300 s: due again at 300 s since that send.
    for waiting_job in backing_off:
        PredictionJob.objects.filter(pk=waiting_job.pk).update(
            created_at=start - timedelta(seconds=400), enqueued_at=start - timedelta(seconds=100)
        )
    # Sent 90 s ago, 10 s after it was made: due (sent later, so after them in the window).
    PredictionJob.objects.filter(pk=job.pk).update(
        created_at=start - timedelta(seconds=100), enqueued_at=start - timedelta(seconds=90)
    )
    assert reconcile.reconcile(now=start).resent == 1
    assert PredictionJob.objects.get(pk=job.pk).enqueued_at == start


@override_settings(RECONCILE_QUEUED_AFTER=60)
def test_a_resend_the_broker_refused_does_not_push_the_next_one_back(job, monkeypatch) -> None:
    start = timezone.now()
    PredictionJob.objects.filter(pk=job.pk).update(created_at=start, enqueued_at=start)

    def refuse(*args: object, **kwargs: object) -> None:
        raise sending.BrokerUnavailable("Redis is down")

    monkeypatch.setattr(sending, "publish", refuse)
    for second in (70, 140, 280):  # Redis down: each pass tries, none counts as a send
        assert reconcile.reconcile(now=start + timedelta(seconds=second)).resent == 0
    assert PredictionJob.objects.get(pk=job.pk).enqueued_at == start
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: None)
    assert reconcile.reconcile(now=start + timedelta(seconds=290)).resent == 1


def test_two_reconcilers_resend_a_job_once(job) -> None:
    stale = PredictionJob.objects.get(pk=job.pk)
    assert submission.resend(stale, now=later(100))
    assert not submission.resend(stale, now=later(100))  # the second read the same old row


@override_settings(JOB_LEASE_SECONDS=10, MAX_ATTEMPTS=2)
def test_a_lost_job_is_run_again_then_failed_at_the_attempt_cap(job) -> None:
    running.claim(job.pk, "t1")
    assert reconcile.reconcile(now=later(5)).requeued == 0  # lease still valid
    assert reconcile.reconcile(now=later(11)).requeued == 1
    assert PredictionJob.objects.get(pk=job.pk).status == Status.QUEUED

    running.claim(job.pk, "t2")
    outcome = reconcile.reconcile(now=later(11))
    job.refresh_from_db()
    assert outcome.failed == 1
    assert (job.status, job.error_code, job.attempts) == (Status.FAILED, "worker_lost", 2)


@override_settings(SINGLE_JOB_LEASE_SECONDS=10, RECONCILE_QUEUED_AFTER=60)
def test_a_single_job_run_before_is_sent_to_be_scored_alone(job, monkeypatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(sending, "publish", lambda name, **kwargs: sent.append(name))
    running.claim_many([(str(job.pk), "t1")])  # its micro-batch's process dies
    assert reconcile.reconcile(now=later(11)).requeued == 1
    assert reconcile.reconcile(now=later(200)).resent == 1  # and its message is lost too
    assert sent == ["predictions.tasks.score_single_job_alone"] * 2


@override_settings(JOB_LEASE_SECONDS=10)
def test_a_finished_job_is_left_alone(job) -> None:
    running.claim(job.pk, "t1")
    running.fail(job.pk, "scoring_failed", "boom")
    outcome = reconcile.reconcile(now=later(3600))
    assert (outcome.resent, outcome.requeued, outcome.failed) == (0, 0, 0)


@pytest.fixture
def planned_batch(monkeypatch) -> tuple[PredictionJob, int, int, list[list]]:
    """A batch job of 15 rows planned in two chunks (nothing sent), and what is sent after."""
    sent: list[list] = []
    monkeypatch.setattr(sending, "publish", lambda name, *, args, **kwargs: sent.append(args))
    make_version()
    frame = pd.DataFrame(iris_rows(15))
    upload = SimpleUploadedFile("rows.csv", frame.to_csv(index=False).encode())
    job, _ = submission.submit_file(make_user(), "iris", upload, size=upload.size)
    with override_settings(BATCH_CHUNK_ROWS=10):
        batching.start(job.pk, "t")
    first, second = sorted(BatchChunk.objects.filter(job=job).values_list("pk", flat=True))
    sent.clear()
    return job, first, second, sent


@override_settings(CHUNK_LEASE_SECONDS=10, JOB_LEASE_SECONDS=600, MAX_ATTEMPTS=2)
def test_a_lost_chunk_is_sent_again_then_fails_its_job_at_the_attempt_cap(planned_batch) -> None:
    job, first, _, sent = planned_batch
    assert batching.claim_chunk(first, "dies-1")  # its process dies: nothing renews the lease
    assert reconcile.reconcile(now=later(5)).chunks_requeued == 0  # lease still valid
    assert reconcile.reconcile(now=later(11)).chunks_requeued == 1  # not the job's 600 s
    assert BatchChunk.objects.get(pk=first).status == ChunkStatus.PENDING
    assert sent == [[first]]
    assert PredictionJob.objects.get(pk=job.pk).status == Status.RUNNING

    assert batching.claim_chunk(first, "dies-2")
    outcome = reconcile.reconcile(now=later(11))
    job.refresh_from_db()
    assert (outcome.failed, outcome.chunks_requeued) == (1, 0)
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    assert job.error_message == "the worker scoring chunk 0 was lost 2 times"


@override_settings(CHUNK_LEASE_SECONDS=10)
def test_a_lost_chunk_the_broker_refused_is_sent_by_the_next_pass(
    planned_batch, monkeypatch
) -> None:
    _, first, _, sent = planned_batch
    assert batching.claim_chunk(first, "dies")

    def refuse(*args: object, **kwargs: object) -> None:
        raise sending.BrokerUnavailable("Redis is down")

    with monkeypatch.context() as patch:
        patch.setattr(sending, "publish", refuse)
        assert reconcile.reconcile(now=later(11)).chunks_requeued == 0
    assert BatchChunk.objects.get(pk=first).status == ChunkStatus.RUNNING  # still lost
    assert reconcile.reconcile(now=later(11)).chunks_requeued == 1
    assert sent == [[first]]


@override_settings(CHUNK_LEASE_SECONDS=10)
def test_a_chunk_taken_for_lost_while_it_still_ran_is_counted_once(
    planned_batch, monkeypatch
) -> None:
    # A process too busy to renew its lease, not dead: the chunk is sent again and another
    # copy claims it while the first still scores. Only the copy holding it counts its rows.
    job, first, second, _ = planned_batch
    real = batching._score_into_part

    def outlived(chunk: BatchChunk) -> tuple[int, int]:
        assert reconcile.reconcile(now=later(11)).chunks_requeued == 1
        assert batching.claim_chunk(first, "copy")
        return real(chunk)

    monkeypatch.setattr(batching, "_score_into_part", outlived)
    batching.score_chunk(first, "slow")
    monkeypatch.setattr(batching, "_score_into_part", real)
    assert PredictionJob.objects.get(pk=job.pk).rows_done == 0
    assert "skipped" in batching.score_chunk(first, "slow")  # its own message again

    assert batching.score_chunk(first, "copy", retrying=True)["rows"] == 10
    batching.score_chunk(second, "other")
    job.refresh_from_db()
    assert (job.status, job.rows_done) == (Status.SUCCEEDED, 15)
    assert len(pd.read_csv(job.result_file.path)) == 15


@override_settings(CHUNK_LEASE_SECONDS=3600)
def test_pending_chunks_are_sent_again_once_when_redis_lost_its_data(planned_batch) -> None:
    # The first chunk's message was taken and it is scoring; the second's waits in the queue.
    _, first, second, sent = planned_batch
    assert batching.claim_chunk(first, "scoring")
    for minutes in (1, 5, 15):  # however long it waits, its message is still there
        assert reconcile.reconcile(now=later(60 * minutes)).chunks_resent == 0
    assert sent == []

    broker.client().set(broker.KEPT_MARKER, "an-earlier-run")  # Redis restarted since
    assert reconcile.reconcile(now=later(1)).chunks_resent == 1
    assert reconcile.reconcile(now=later(2)).chunks_resent == 0  # once
    assert sent == [[second]]  # never the one scoring
    # The copy and the message, should Redis have kept it after all: one scores it.
    assert batching.score_chunk(second, "one")["rows"] == 5
    assert "skipped" in batching.score_chunk(second, "another")


def test_pending_chunks_the_broker_refused_to_take_again_are_sent_by_the_next_pass(
    planned_batch, monkeypatch
) -> None:
    _, first, second, sent = planned_batch
    broker.client().delete(broker.KEPT_MARKER)

    def refuse(*args: object, **kwargs: object) -> None:
        raise sending.BrokerUnavailable("Redis is down")

    with monkeypatch.context() as patch:
        patch.setattr(sending, "publish", refuse)
        assert reconcile.reconcile(now=later(1)).chunks_resent == 0
    assert reconcile.reconcile(now=later(2)).chunks_resent == 2
    assert sorted(sent) == [[first], [second]]


def test_a_pass_while_the_database_is_away_is_one_warning_line(monkeypatch, caplog) -> None:
    # A database outage: the reconciler runs every RECONCILE_INTERVAL, and each pass was an
    # ERROR with Celery's 70-line traceback, for what the next pass does again by design.
    stale = fails_at_call(reconcile.stale_queued_jobs)
    monkeypatch.setattr(reconcile, "stale_queued_jobs", stale)
    tasks.reconcile_jobs()
    [record] = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert "server closed the connection" in record.getMessage()
