"""The reconciler: what Redis forgot (a queued job, a pending batch chunk) is sent again;
what a dead worker held (a job, a batch chunk) is run again or, lost MAX_ATTEMPTS times,
failed; a training run it held fails.

Every change is a conditional update on the values just read, so two reconcilers running at
once act on each job at most once between them.
"""

import logging
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from uuid import uuid4

from django.conf import settings
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, QuerySet
from django.utils import timezone

from mlsite import broker
from modelregistry import training_runs

from . import batching, running, submission, waiting
from .models import BatchChunk, ChunkStatus, PredictionJob, Status

logger = logging.getLogger(__name__)
BATCH_LIMIT = 500  # per pass; the next pass takes the rest


@dataclass
class Reconciled:
    resent: int = 0
    requeued: int = 0
    failed: int = 0
    chunks_requeued: int = 0
    chunks_resent: int = 0
    training_runs_failed: int = 0
    training_runs_resent: int = 0


def stale_queued_jobs(now: datetime) -> QuerySet[PredictionJob]:
    """Queued jobs due to be sent again: never sent and older than RECONCILE_QUEUED_AFTER, or
    waiting since their last send as long as they had waited before it (at least that
    setting, at most ten times it), so resends back off: 60 s, 120, 240 … apart. Sent every
    pass instead, a backlog behind a stalled worker was queued once more a minute, and the
    worker, once back, skipped every copy. The database picks them, so a backlog still
    backing off never hides a due job behind it."""
    quiet = timedelta(seconds=settings.RECONCILE_QUEUED_AFTER)
    never_sent = Q(enqueued_at__isnull=True, created_at__lt=now - quiet)
    waited_before = ExpressionWrapper(
        F("enqueued_at") - F("created_at"), output_field=DurationField()
    )
    doubled = ExpressionWrapper(F("enqueued_at") + waited_before, output_field=DateTimeField())
    due = Q(enqueued_at__lt=now - quiet) & (
        Q(enqueued_at__lte=now - 10 * quiet) | Q(doubled__lte=now)
    )
    return PredictionJob.objects.alias(doubled=doubled).filter(
        never_sent | due, status=Status.QUEUED
    )


def pending_chunks() -> QuerySet[BatchChunk]:
    return BatchChunk.objects.filter(status=ChunkStatus.PENDING, job__status=Status.RUNNING)


def _resend_chunks_if_broker_forgot() -> int:
    """Send every pending chunk of a running job again when Redis restarted since the last
    pass (its run id differs from the marker's, or the marker is gone): their messages may
    have gone with it, all of them without persistence. Left to their job's lease, they
    waited JOB_LEASE_SECONDS after the last other chunk ran. Sent by age, as queued jobs
    are, an ordinary large batch's chunks, which wait in the queue by design, went out again
    and again. The marker is put back once every send went through to the same server, so a
    pass cut short leaves them to the next (twice is harmless: a copy finds its chunk taken).
    """
    try:
        run = broker.server_run()
        if broker.has_kept_its_data(run):
            return 0
        sent = [
            batching.send_chunk_again(chunk) for chunk in pending_chunks().select_related("job")
        ]
        if all(sent):  # a send refused: the next pass sends them all again
            broker.mark_data_kept(run)
    except broker.UNAVAILABLE:
        return 0
    return sum(sent)


def lost_jobs(now: datetime) -> QuerySet[PredictionJob]:
    return PredictionJob.objects.filter(status=Status.RUNNING, lease_expires_at__lt=now)


def reconcile(*, now: datetime | None = None) -> Reconciled:
    now = now or timezone.now()
    outcome = Reconciled()
    for job in stale_queued_jobs(now).order_by("enqueued_at")[:BATCH_LIMIT]:
        outcome.resent += submission.resend(job, now=now)
    for job in lost_jobs(now).order_by("lease_expires_at")[:BATCH_LIMIT]:
        if job.attempts >= settings.MAX_ATTEMPTS:
            outcome.failed += _fail_lost(job, now)
        else:
            outcome.requeued += _requeue_lost(job, now)
    lost_chunks = batching.lost_chunks(now).select_related("job")
    for chunk in lost_chunks.order_by("lease_expires_at")[:BATCH_LIMIT]:
        if chunk.attempts >= settings.MAX_ATTEMPTS:
            outcome.failed += _fail_lost_chunk(chunk, now)
        else:
            outcome.chunks_requeued += batching.run_chunk_again(chunk, now)
    outcome.chunks_resent = _resend_chunks_if_broker_forgot()
    outcome.training_runs_failed = training_runs.fail_stale_runs(None, now)
    outcome.training_runs_resent = training_runs.resend_unstarted_runs(now)
    if any(astuple(outcome)):
        logger.warning("reconciled jobs: %s", outcome)
    return outcome


def _still_lost(job: PredictionJob) -> QuerySet[PredictionJob]:
    return PredictionJob.objects.filter(
        pk=job.pk,
        status=Status.RUNNING,
        attempts=job.attempts,
        lease_expires_at=job.lease_expires_at,
    )


def _requeue_lost(job: PredictionJob, now: datetime) -> bool:
    task_id = str(uuid4())
    changed = _still_lost(job).update(
        status=Status.QUEUED, task_id=task_id, enqueued_at=now, lease_expires_at=None
    )
    if changed:
        submission.send(job.pk, job.kind, task_id, job.priority, run_before=True)
    return bool(changed)


def _fail_lost_chunk(chunk: BatchChunk, now: datetime) -> bool:
    message = f"the worker scoring chunk {chunk.index} was lost {chunk.attempts} times"
    return running.fail(chunk.job_id, "worker_lost", message, now=now)


def _fail_lost(job: PredictionJob, now: datetime) -> bool:
    changed = _still_lost(job).update(
        status=Status.FAILED,
        error_code="worker_lost",
        error_message=f"the worker running it was lost {job.attempts} times",
        finished_at=now,
        lease_expires_at=None,
    )
    if changed:
        waiting.announce_finished([job.pk])
    return bool(changed)
