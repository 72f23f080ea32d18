"""Result retention: old jobs lose their payloads and files but keep their summary.

A finished job older than RESULT_RETENTION_DAYS keeps its status, counts, times, error
code and owner (so history, metrics and audits stay whole), and loses its input rows,
outputs, uploaded file, result and error files and batch chunk parts. The
django-celery-results rows of the same age go too, so both tables stay bounded.
"""

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast
from uuid import UUID

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_celery_results.models import GroupResult, TaskResult

from .batching import work_dir
from .models import FINISHED, BatchChunk, PredictionJob

logger = logging.getLogger(__name__)


@dataclass
class PurgeReport:
    jobs: int = 0
    files: int = 0
    task_results: int = 0
    abandoned_uploads: int = 0


# An upload streams to FILE_UPLOAD_TEMP_DIR and is renamed into the store when its request
# ends; a file older than this belonged to a web process that died mid-request.
ABANDONED_UPLOAD_AGE = timedelta(days=1)


def cutoff(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)


def expired_jobs(before: datetime) -> QuerySet[PredictionJob]:
    """Finished jobs, finished before `before`, whose payload is still there."""
    return PredictionJob.objects.filter(
        status__in=FINISHED, finished_at__lt=before, purged_at__isnull=True
    ).order_by("finished_at")


def purge_expired(
    now: datetime | None = None,
    days: int | None = None,
    batch_size: int | None = None,
    max_batches: int = 100,
) -> PurgeReport:
    """Purges up to max_batches batches of expired jobs and task results.

    `days` 0 keeps everything. Each batch commits on its own, so a run cut short by its
    time limit keeps what it did, and the next run carries on where it stopped.
    """
    now = now or timezone.now()
    days = settings.RESULT_RETENTION_DAYS if days is None else days
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    report = PurgeReport(abandoned_uploads=sweep_abandoned_uploads(now))
    if days <= 0:
        return report
    before = cutoff(now, days)
    for _ in range(max_batches):
        ids = list(expired_jobs(before).values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        jobs, files = purge_jobs(ids, now, before=before)
        report.jobs += jobs
        report.files += files
    report.task_results = purge_task_results(before, batch_size, max_batches)
    logger.info(
        "retention: purged %d job payloads, %d files, %d task results older than %s",
        report.jobs,
        report.files,
        report.task_results,
        before.isoformat(),
    )
    return report


def sweep_abandoned_uploads(now: datetime) -> int:
    """Delete upload temp files left by a web process that died mid-request; how many."""
    oldest = (now - ABANDONED_UPLOAD_AGE).timestamp()
    swept = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(settings.FILE_UPLOAD_TEMP_DIR) as found:
        for entry in found:
            if entry.is_file() and entry.stat().st_mtime < oldest:
                os.unlink(entry.path)
                swept += 1
    return swept


def purge_jobs(
    ids: list[UUID], now: datetime, *, before: datetime | None = None
) -> tuple[int, int]:
    """Empties these jobs' payloads, if they are still finished before `before` (default
    `now`); returns (jobs purged, files deleted)."""
    with transaction.atomic():
        # Checked again under the lock: a job retried since it was listed is queued again,
        # and its inputs are what its new attempt scores.
        candidates = PredictionJob.objects.filter(
            pk__in=ids, status__in=FINISHED, finished_at__lt=before or now, purged_at__isnull=True
        )
        locked = list(candidates.select_for_update().values_list("pk", flat=True))
        jobs = PredictionJob.objects.filter(pk__in=locked)
        names = _stored_files(jobs)
        BatchChunk.objects.filter(job__in=jobs).delete()
        purged = jobs.update(
            inputs=None,
            outputs=None,
            input_file="",
            result_file="",
            error_file="",
            purged_at=now,
        )
    # Files go after the commit: a crash in between leaves an orphan file, never a row
    # that points at a deleted one.
    deleted = sum(_delete_stored(name) for name in names)
    for job_id in locked:
        _delete_work_dir(job_id)
    return purged, deleted


def delete_job_files(job_id: UUID, names: list[str]) -> int:
    """Delete a deleted job's stored files (upload, result, errors) and its batch work folder;
    how many stored files went. Call it once the delete has committed."""
    _delete_work_dir(job_id)
    return sum(_delete_stored(name) for name in names)


def _delete_work_dir(job_id: UUID) -> None:
    # A batch that failed or was cancelled leaves its parts here; one that succeeded, nothing.
    shutil.rmtree(work_dir(job_id), ignore_errors=True)


def purge_task_results(before: datetime, batch_size: int, max_batches: int) -> int:
    """Deletes django-celery-results rows finished before `before`, in batches."""
    deleted = 0
    for model in (TaskResult, GroupResult):
        for _ in range(max_batches):
            ids = list(
                model.objects.filter(date_done__lt=before)
                .order_by("date_done")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            deleted += model.objects.filter(pk__in=ids).delete()[0]
    return deleted


def _stored_files(jobs: QuerySet[PredictionJob]) -> list[str]:
    names: list[str] = []
    for row in jobs.values("input_file", "result_file", "error_file"):
        names += [cast(str, name) for name in row.values() if name]
    return names


def _delete_stored(name: str) -> int:
    try:
        if not default_storage.exists(name):
            return 0
        default_storage.delete(name)
    except OSError:
        logger.warning("retention: could not delete stored file %s", name, exc_info=True)
        return 0
    return 1
