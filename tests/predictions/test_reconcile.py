"""The reconciler: resend what stayed queued, re-run or fail what a lost worker held."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from mlsite import sending
from predictions import reconcile, running, submission
from predictions.models import PredictionJob, Status
from tests.base import make_user
from tests.builders import iris_rows, make_version

pytestmark = pytest.mark.django_db


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


@override_settings(JOB_LEASE_SECONDS=10)
def test_a_finished_job_is_left_alone(job) -> None:
    running.claim(job.pk, "t1")
    running.fail(job.pk, "scoring_failed", "boom")
    outcome = reconcile.reconcile(now=later(3600))
    assert (outcome.resent, outcome.requeued, outcome.failed) == (0, 0, 0)
