"""Running jobs: claim, score small jobs in micro-batches, finish, fail, cancel and retry."""

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast
from uuid import UUID, uuid4

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from mlsite import dbretry
from mlsite.errors import Conflict, DomainError
from mlsite.freshcache import FreshCache
from modelregistry import loader
from modelregistry.models import ModelVersion, TaskKind

from . import heartbeat, scoring, submission, waiting
from .jobrows import RowUpdate
from .models import PredictionJob, Status

logger = logging.getLogger(__name__)


class NotCancellable(Conflict):
    code = "not_cancellable"


class NotRetryable(Conflict):
    code = "not_retryable"


# A micro-batch's claims and writes: one statement per job, each telling whether it was ours.
# A claim is known again by the state, task and start it wrote; a finish by its end.
CLAIM = RowUpdate(
    ["status", "started_at", "lease_expires_at", "task_id"],
    ["id"],
    required={"status": Status.QUEUED},
    counted=["attempts"],
    stamped=["status", "task_id", "started_at"],
)
FINISH = RowUpdate(
    [
        "status",
        "outputs",
        "rows_done",
        "error_code",
        "error_message",
        "finished_at",
        "lease_expires_at",
    ],
    ["id", "task_id"],
    required={"status": Status.RUNNING},
    stamped=["finished_at"],
)


def lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.JOB_LEASE_SECONDS)


def claim(
    job_id: UUID | str, task_id: str, *, retrying: bool = False, now: datetime | None = None
) -> PredictionJob | None:
    """Move a queued job to running for this task. None means it is not ours to run.

    A retry of the task that claimed it (same task id, after a database error) takes it back
    with a fresh lease and no further attempt counted, instead of waiting for the lease.
    """
    now = now or timezone.now()
    changed = PredictionJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING,
        started_at=now,
        task_id=task_id,
        attempts=F("attempts") + 1,
        lease_expires_at=lease_until(now),
    )
    if not changed and retrying:
        changed = PredictionJob.objects.filter(
            pk=job_id, status=Status.RUNNING, task_id=task_id
        ).update(lease_expires_at=lease_until(now))
    if not changed:
        return None
    return PredictionJob.objects.select_related("version__registered_model").get(pk=job_id)


def claim_many(
    requests: Sequence[tuple[str, str]], *, now: datetime | None = None
) -> list[PredictionJob]:
    """Claim the queued jobs among (job id, task id) pairs in one transaction; return ours."""
    now = now or timezone.now()
    task_of = dict(requests)  # a job sent twice in one micro-batch is claimed once
    # A short lease, renewed while the micro-batch runs (predictions/heartbeat.py).
    lease = heartbeat.single_jobs.until(now)
    changes = {"status": Status.RUNNING, "started_at": now, "lease_expires_at": lease}
    rows = [({**changes, "task_id": task}, {"id": job}) for job, task in task_of.items()]
    # Claimed and read back as two steps, each retried alone: a read-back that failed does
    # not claim again.
    ours = dbretry.retrying(partial(_claim_rows, rows), "claiming a micro-batch")
    claimed = [job for job, is_ours in zip(task_of, ours, strict=True) if is_ours]
    if not claimed:
        return []
    return dbretry.retrying(partial(_read_claimed, claimed), "reading a micro-batch's jobs")


def _claim_rows(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[bool]:
    """Claim each row; whether it is ours (also when this very claim committed before, and
    only its answer was lost)."""
    with transaction.atomic():
        return CLAIM.run_or_held(rows)


def _read_claimed(job_ids: list[str]) -> list[PredictionJob]:
    jobs = list(PredictionJob.objects.filter(pk__in=job_ids).order_by())
    for job in jobs:
        job.version = _version(job.version_id)
    return jobs


_versions: FreshCache[ModelVersion] = FreshCache()


def _version(version_id: int) -> ModelVersion:
    """A version with its model, cached per process (a join per micro-batch cost more than
    scoring it); dropped when versions change, like resolve()'s (mlsite/freshcache.py)."""
    query = ModelVersion.objects.select_related("registered_model")
    return _versions.get(version_id, partial(query.get, pk=version_id))


def score_jobs(
    jobs: Sequence[PredictionJob],
    *,
    now: datetime | None = None,
    on_written: Callable[[list[PredictionJob]], None] | None = None,
) -> list[str]:
    """Score claimed small jobs, one model call per version; write outputs; return finished ids.

    A version that cannot be loaded or scored fails its own jobs and no others. `on_written`
    is called with the jobs written, in the same transaction as their rows (one commit, so one
    wait for SQLite's write lock, per micro-batch).
    """
    by_version: dict[int, list[PredictionJob]] = defaultdict(list)
    for job in jobs:
        by_version[job.version_id].append(job)
    for group in by_version.values():
        try:
            _score_group(group[0].version, group)
        except DomainError as exc:
            logger.warning("jobs of %s failed: %s", group[0].version.ref, exc)
            for job in group:
                _mark_failed(job, exc.code, str(exc))
    finished_at = now or timezone.now()
    for job in jobs:
        job.finished_at = finished_at
        job.lease_expires_at = None
    written = dbretry.retrying(
        partial(_write_finished, jobs, on_written), "writing a micro-batch's outputs"
    )
    waiting.announce_finished(written)
    return [str(job.pk) for job in written]


def _write_finished(
    jobs: Sequence[PredictionJob], on_written: Callable[[list[PredictionJob]], None] | None
) -> list[PredictionJob]:
    """Write the jobs' final state in one transaction; the jobs written.

    Only rows still running this attempt are written: a job cancelled meanwhile stays
    cancelled, and one the reconciler gave to another worker (a new task id) is theirs. A row
    that already holds this very write (same task id and finished_at) counts as written, but
    is not passed to `on_written` again: it was committed with it, and only the answer lost.
    """
    rows = [
        (
            {name: getattr(job, name) for name in FINISH.assigned},
            {"id": job.pk, "task_id": job.task_id},
        )
        for job in jobs
    ]
    with transaction.atomic():
        changed = FINISH.run(rows)
        if on_written is not None:
            on_written([job for job, was in zip(jobs, changed, strict=True) if was])
        ours = FINISH.or_held(rows, changed)
    return [job for job, is_ours in zip(jobs, ours, strict=True) if is_ours]


def _score_group(version: ModelVersion, jobs: list[PredictionJob]) -> None:
    estimator = loader.load(version)  # raises ArtifactMismatch
    features = version.registered_model.feature_names
    # A single job always has its rows (inputs is null only for batch jobs).
    matrix = np.array(
        [[row[name] for name in features] for job in jobs for row in cast(list, job.inputs)]
    )
    is_classifier = version.registered_model.task_kind == TaskKind.CLASSIFICATION
    scored = scoring.score_rows(estimator, matrix, is_classifier, features)
    start = 0
    for job in jobs:
        stop = start + len(cast(list, job.inputs))
        failed = scored.first_failure(start, stop)
        if failed is None:
            job.outputs = scored.rows(start, stop)
            job.status = Status.SUCCEEDED
            job.rows_done = stop - start
        else:  # a row the model fails on fails its own job, not the jobs scored beside it
            reason = scored.failures[failed]
            _mark_failed(job, scoring.ScoringFailed.code, f"row {failed - start + 1}: {reason}")
        start = stop


def _mark_failed(job: PredictionJob, code: str, message: str) -> None:
    job.status = Status.FAILED
    job.error_code = code
    job.error_message = message[:2000]


def summary(job: PredictionJob) -> dict[str, Any]:
    """What a job's TaskResult says: a summary, never the outputs."""
    return {
        "job": str(job.pk),
        "status": job.status,
        "rows": job.rows_total,
        "rows_failed": job.rows_failed,
        "error_code": job.error_code,
    }


def fail(job_id: UUID | str, code: str, message: str, *, now: datetime | None = None) -> bool:
    """Fail a running job with an error code; False if it was no longer running."""
    changed = PredictionJob.objects.filter(pk=job_id, status=Status.RUNNING).update(
        status=Status.FAILED,
        error_code=code,
        error_message=message[:2000],
        finished_at=now or timezone.now(),
        lease_expires_at=None,
    )
    if changed:
        waiting.announce_finished([job_id])
    return bool(changed)


def renew_lease(job_id: UUID | str, *, now: datetime | None = None) -> bool:
    """Extend a running job's lease; False means it is no longer running (cancelled, lost)."""
    now = now or timezone.now()
    return bool(
        PredictionJob.objects.filter(pk=job_id, status=Status.RUNNING).update(
            lease_expires_at=lease_until(now)
        )
    )


def cancel(jobs: QuerySet[PredictionJob], *, now: datetime | None = None) -> int:
    """Cancel the queued or running jobs among these; the count of jobs cancelled.

    Stored on the row first: workers check it before they start and between chunks.
    """
    active = list(jobs.filter(status__in=[Status.QUEUED, Status.RUNNING]).values_list("pk"))
    ids = [pk for (pk,) in active]
    changed = PredictionJob.objects.filter(
        pk__in=ids, status__in=[Status.QUEUED, Status.RUNNING]
    ).update(status=Status.CANCELLED, finished_at=now or timezone.now(), lease_expires_at=None)
    waiting.announce_finished(ids)
    return changed


def cancel_one(job: PredictionJob) -> PredictionJob:
    """Cancel one job; raises NotCancellable if it already finished."""
    if not cancel(PredictionJob.objects.filter(pk=job.pk)):
        raise NotCancellable(f"job {job.pk} already finished ({job.status})")
    job.refresh_from_db()
    return job


def retry(jobs: QuerySet[PredictionJob], *, now: datetime | None = None) -> int:
    """Queue failed or cancelled jobs for a new attempt; the count of jobs re-queued.

    A job whose inputs result retention deleted has nothing left to score: it stays as it is.
    """
    retried = 0
    for job in jobs.filter(status__in=[Status.FAILED, Status.CANCELLED], purged_at__isnull=True):
        retried += _retry(job, now or timezone.now())
    return retried


def retry_one(job: PredictionJob) -> PredictionJob:
    """Retry one job; raises NotRetryable unless it failed or was cancelled and still has its
    inputs."""
    if not retry(PredictionJob.objects.filter(pk=job.pk)):
        job.refresh_from_db()  # as it is now: a purge or another retry may have come between
        if job.purged_at is not None:
            raise NotRetryable(
                f"job {job.pk} cannot be retried: result retention deleted its inputs "
                f"on {job.purged_at:%Y-%m-%d}"
            )
        raise NotRetryable(f"only failed or cancelled jobs can be retried, not {job.status}")
    job.refresh_from_db()
    return job


def _retry(job: PredictionJob, now: datetime) -> bool:
    from . import batching  # batching imports this module

    task_id = str(uuid4())
    # purged_at again here: retention may have emptied the job since retry() listed it.
    changed = PredictionJob.objects.filter(
        pk=job.pk, status__in=[Status.FAILED, Status.CANCELLED], purged_at__isnull=True
    ).update(
        status=Status.QUEUED,
        task_id=task_id,
        enqueued_at=now,
        attempts=0,  # the cap counts lost workers since the last submit or retry
        outputs=None,
        rows_done=0,
        rows_failed=0,
        error_code="",
        error_message="",
        started_at=None,
        finished_at=None,
        lease_expires_at=None,
    )
    if changed:
        batching.forget_plan(job)
        send = partial(submission.send, job.pk, job.kind, task_id, job.priority)
        transaction.on_commit(send)
    return bool(changed)
