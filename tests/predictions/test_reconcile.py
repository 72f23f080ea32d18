"""The reconciler: resend what stayed queued, re-run or fail what a lost worker held."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

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
