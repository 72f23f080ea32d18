"""Batch jobs: plan chunks, score each chunk in parallel, merge the parts when the last is done."""

import json
import logging
import shutil
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import NamedTuple
from uuid import UUID

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from mlsite import dbretry, sending
from mlsite.errors import DomainError
from modelregistry import loader
from modelregistry.models import TaskKind

from . import batchfiles, heartbeat, running, scoring, taskresults, waiting
from .batchfiles import ByteRange
from .models import BatchChunk, ChunkStatus, FileFormat, PredictionJob, Status

logger = logging.getLogger(__name__)
CHUNK_TASK = "predictions.tasks.score_batch_chunk"
NO_ROWS_SCORED = "no_rows_scored"


def work_dir(job_id: UUID | str) -> Path:
    """Where a batch job's parts (and converted input) live; storage must be a filesystem."""
    return Path(default_storage.path(f"work/{job_id}"))


def start(job_id: UUID | str, task_id: str, *, retrying: bool = False) -> dict[str, object]:
    """Claim a batch job, plan its chunks (or reuse the plan of a lost attempt), send them.

    `retrying`: this is the task's own retry, which may take back the job it claimed.
    """
    job = running.claim(job_id, task_id, retrying=retrying)
    if job is None:
        return {"job": str(job_id), "skipped": "not queued"}
    try:
        chunk_ids = _plan(job)
    except DomainError as exc:
        running.fail(job.pk, exc.code, str(exc))
        return {"job": str(job.pk), "status": Status.FAILED, "error_code": exc.code}
    try:
        for chunk_id in chunk_ids:
            sending.publish(CHUNK_TASK, args=[chunk_id], priority=9 - job.priority)
    except sending.BrokerUnavailable as exc:
        _run_again_later(job, task_id)
        logger.warning(
            "batch job %s: chunks not sent (%s); the reconciler runs it again after %d s",
            job.pk,
            exc,
            settings.RECONCILE_QUEUED_AFTER,
        )
        return {"job": str(job.pk), "chunks": len(chunk_ids), "unsent": str(exc)}
    if not chunk_ids:  # a lost attempt had scored every chunk but not merged them
        merge_if_complete(job.pk)
    return {"job": str(job.pk), "chunks": len(chunk_ids)}


def _run_again_later(job: PredictionJob, task_id: str) -> None:
    """A batch whose chunks could not all be sent keeps its plan and stays running, with a
    lease as short as a queued job's wait for a resend: the reconciler then runs it again
    and the chunks not done are sent anew. The broker's absence is no lost worker, so the
    attempt is given back. (Should some chunks have gone out before the broker went away,
    each renews the full lease as it runs, and the rest wait for that lease to end.)
    """
    retry_at = timezone.now() + timedelta(seconds=settings.RECONCILE_QUEUED_AFTER)
    PredictionJob.objects.filter(pk=job.pk, status=Status.RUNNING, task_id=task_id).update(
        attempts=F("attempts") - 1, lease_expires_at=retry_at
    )


def _plan(job: PredictionJob) -> list[int]:
    if job.chunks.exists():
        # A re-run after a lost worker: done chunks stand, the rest run again.
        job.chunks.filter(status=ChunkStatus.RUNNING).update(
            status=ChunkStatus.PENDING, claimed_by="", lease_expires_at=None
        )
        PredictionJob.objects.filter(pk=job.pk).update(result_file="")
        return list(job.chunks.exclude(status=ChunkStatus.DONE).values_list("pk", flat=True))
    directory = work_dir(job.pk)
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "parts").mkdir(parents=True)
    spans, rows = _cut(job, directory)
    if rows == 0:
        raise batchfiles.BadFile("the file has no rows to score", field="file")
    # The plan and the job's row count are one write: chunks without the count would be
    # taken for a lost attempt's plan, and the job would end with no rows to score.
    with transaction.atomic():
        chunks = BatchChunk.objects.bulk_create(
            BatchChunk(
                job=job,
                index=index,
                start_row=span.start_row,
                stop_row=span.stop_row,
                start_byte=span.start_byte,
                stop_byte=span.stop_byte,
            )
            for index, span in enumerate(spans)
        )
        PredictionJob.objects.filter(pk=job.pk).update(rows_total=rows, rows_failed=0)
    return [chunk.pk for chunk in chunks]


def _cut(job: PredictionJob, directory: Path) -> tuple[list[ByteRange], int]:
    """The chunks and the rows in all."""
    source = Path(job.input_file.path)
    if job.input_format == FileFormat.CSV:
        plain = batchfiles.plan_csv_ranges(
            source, settings.BATCH_CHUNK_ROWS, settings.MAX_FILE_ROWS
        )
        if plain is not None:
            return plain.ranges, plain.rows
    conversion = batchfiles.convert_to_parquet(
        source,
        job.input_format,
        directory / "input.parquet",
        job.version.registered_model.feature_names,
        job.id_column,
        rows_per_group=settings.BATCH_CHUNK_ROWS,
        max_rows=settings.MAX_FILE_ROWS,
    )
    spans = [ByteRange(0, 0, start, stop) for start, stop in conversion.row_groups]
    return spans, conversion.rows


def score_chunk(chunk_id: int, task_id: str = "", *, retrying: bool = False) -> dict[str, object]:
    """Score one chunk unless its job was cancelled or it is taken; the last chunk merges.

    A retry of the task that claimed the chunk (same task id, after a database error) takes
    it back, or, had the attempt before done it, does the merge that may have failed after:
    the first attempt is over, and neither need wait for the job's lease.
    """
    if not claim_chunk(chunk_id, task_id, retrying=retrying):
        if retrying and task_id:
            done_by_us = BatchChunk.objects.filter(
                pk=chunk_id, status=ChunkStatus.DONE, claimed_by=task_id
            ).values_list("job_id", flat=True)
            if (job_id := done_by_us.first()) is not None:
                merge_if_complete(job_id)
        return {"chunk": chunk_id, "skipped": "not pending or job not running"}
    chunk = BatchChunk.objects.select_related("job__version__registered_model").get(pk=chunk_id)
    job = chunk.job
    running.renew_lease(job.pk)
    try:
        with heartbeat.chunks.holding([chunk_id]):
            scored, failed = _score_into_part(chunk)
    except DomainError as exc:
        running.fail(job.pk, exc.code, str(exc))
        return {"chunk": chunk_id, "job": str(job.pk), "error_code": exc.code}
    except OSError:
        if PredictionJob.objects.filter(pk=job.pk).exists():
            raise
        # Deleted while this chunk ran: its files went with it (predictions/signals.py).
        return {"chunk": chunk_id, "job": str(job.pk), "skipped": "job deleted"}
    # The chunk is done only with its rows counted: written apart, a database lost between
    # the two left a done chunk whose rows no retry counted, and the job succeeded short of
    # them (PostgreSQL outage test: 19,500 of 20,000). Rolled back, the chunk stays running
    # for the task's retry to take back (or, had the task no retry left, its lease to end).
    # Only its claimant finishes it: one the reconciler took for lost and sent again is
    # counted once, by whichever copy holds it now.
    with transaction.atomic():
        finished = BatchChunk.objects.filter(
            pk=chunk_id, status=ChunkStatus.RUNNING, claimed_by=task_id
        ).update(status=ChunkStatus.DONE, rows_failed=failed, lease_expires_at=None)
        if finished:
            # A range's rows were counted as lines: blank ones are not rows.
            miscounted = (
                (chunk.stop_row - chunk.start_row) - (scored + failed) if chunk.stop_byte else 0
            )
            PredictionJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
                rows_total=F("rows_total") - miscounted,
                rows_done=F("rows_done") + scored + failed,
                rows_failed=F("rows_failed") + failed,
                lease_expires_at=running.lease_until(timezone.now()),
            )
    if finished:
        merge_if_complete(job.pk)
    return {
        "chunk": chunk_id,
        "job": str(job.pk),
        "rows": scored,
        "rows_failed": failed,
    }


def lost_chunks(now: datetime) -> QuerySet[BatchChunk]:
    """Running chunks of running jobs whose lease ran out: their process stopped renewing it."""
    return BatchChunk.objects.filter(
        status=ChunkStatus.RUNNING, lease_expires_at__lt=now, job__status=Status.RUNNING
    )


def run_chunk_again(chunk: BatchChunk, now: datetime) -> bool:
    """Put a lost chunk back to pending and send it again, unless someone else just did;
    its job's lease starts afresh, so the job is not taken for lost while the chunk waits.

    The message of the lost claim, should the broker deliver it again, finds the chunk
    taken and skips it: taking work back on a redelivery would loop on a chunk that kills
    its worker, which the claims' count stops at MAX_ATTEMPTS instead.
    """
    still_lost = BatchChunk.objects.filter(
        pk=chunk.pk,
        status=ChunkStatus.RUNNING,
        claimed_by=chunk.claimed_by,
        lease_expires_at=chunk.lease_expires_at,
    )
    if not still_lost.update(status=ChunkStatus.PENDING, claimed_by="", lease_expires_at=None):
        return False
    running.renew_lease(chunk.job_id, now=now)
    try:
        sending.publish(CHUNK_TASK, args=[chunk.pk], priority=9 - chunk.job.priority)
    except sending.BrokerUnavailable:
        # Lost again as it was, so the next pass tries once more.
        BatchChunk.objects.filter(pk=chunk.pk, status=ChunkStatus.PENDING, claimed_by="").update(
            status=ChunkStatus.RUNNING,
            claimed_by=chunk.claimed_by,
            lease_expires_at=chunk.lease_expires_at,
        )
        return False
    return True


def send_chunk_again(chunk: BatchChunk) -> bool:
    """Send a pending chunk's message again (after Redis restarted); False when the broker
    refused it. A copy of a message still queued finds its chunk taken and skips it."""
    try:
        sending.publish(CHUNK_TASK, args=[chunk.pk], priority=9 - chunk.job.priority)
    except sending.BrokerUnavailable:
        return False
    return True


def claim_chunk(chunk_id: int, task_id: str, *, retrying: bool = False) -> bool:
    """Take a pending chunk (an attempt counted) or, for the claiming task's own retry, the
    chunk it holds (none counted: a database error is no lost worker), with a fresh lease."""
    lease = heartbeat.chunks.until(timezone.now())
    chunks = BatchChunk.objects.filter(pk=chunk_id, job__status=Status.RUNNING)
    if chunks.filter(status=ChunkStatus.PENDING).update(
        status=ChunkStatus.RUNNING,
        claimed_by=task_id,
        attempts=F("attempts") + 1,
        lease_expires_at=lease,
    ):
        return True
    if not (retrying and task_id):
        return False
    ours = chunks.filter(status=ChunkStatus.RUNNING, claimed_by=task_id)
    return bool(ours.update(lease_expires_at=lease))


def _score_into_part(chunk: BatchChunk) -> tuple[int, int]:
    """Rows scored, rows failed (unreadable ones among them)."""
    job = chunk.job
    model = job.version.registered_model
    directory = work_dir(job.pk)
    rows = _read(chunk, model.feature_names)
    estimator = loader.load(job.version)  # raises ArtifactMismatch
    with_probabilities = model.task_kind == TaskKind.CLASSIFICATION and scoring.gives_probabilities(
        estimator
    )
    classes = list(estimator.classes_) if with_probabilities else []
    names = batchfiles.header(job.id_column, classes)
    failed = rows.errors  # (position in the chunk, reason)
    scored = 0
    if len(rows.good):
        result = scoring.score_rows(estimator, rows.matrix, with_probabilities, model.feature_names)
        if result.failures:  # rows the model failed on, as positions in the chunk
            failed = sorted(
                failed + [(int(rows.good[at]), why) for at, why in result.failures.items()]
            )
        scored = len(result.good)
        if scored:
            good = rows.good[result.good]
            # Without an id column, the row's number as the error file gives it: failed rows
            # are left out, so a result lined up with its input by position went wrong after one.
            ids = rows.ids[good] if rows.ids is not None else chunk.start_row + good + 1
            scores = result.scores
            batchfiles.write_part(
                _part(directory, chunk.index), ids, scores.predictions, scores.probabilities, names
            )
    errors = [
        (str(chunk.start_row + at + 1), _id_at(rows.ids, at), reason) for at, reason in failed
    ]
    if errors:
        batchfiles.write_errors(directory / "parts" / f"errors-{chunk.index:06d}.csv", errors)
    if chunk.index == 0:
        header = {"names": names, "text_predictions": scoring.predicts_text(estimator)}
        (directory / "header.json").write_text(json.dumps(header), encoding="utf-8")
    return scored, len(failed)


def _read(chunk: BatchChunk, features: list[str]) -> batchfiles.ChunkRows:
    job = chunk.job
    if not chunk.stop_byte:
        path = work_dir(job.pk) / "input.parquet"
        return batchfiles.read_chunk(path, chunk.index, features, job.id_column)
    span = ByteRange(chunk.start_byte, chunk.stop_byte, chunk.start_row, chunk.stop_row)
    return batchfiles.read_range(Path(job.input_file.path), span, features, job.id_column)


def _id_at(ids: np.ndarray | None, at: int) -> str:
    return "" if ids is None else str(ids[at])


def _part(directory: Path, index: int) -> Path:
    return directory / "parts" / f"{index:06d}.csv"


def merge_if_complete(job_id: UUID | str) -> bool:
    """Merge the parts once every chunk is done; only one caller wins the merge."""
    # Django converts a str id; the stubs accept only a UUID.
    if BatchChunk.objects.filter(job_id=job_id).exclude(status=ChunkStatus.DONE).exists():  # type: ignore[misc]
        return False
    if PredictionJob.objects.filter(pk=job_id, status=Status.RUNNING, rows_total=0).exists():
        # A plain CSV is counted in lines: every one of them was blank.
        running.fail(job_id, batchfiles.BadFile.code, "the file has no rows to score")
        return False
    result_name = f"results/{job_id}.csv"
    won = PredictionJob.objects.filter(pk=job_id, status=Status.RUNNING, result_file="").update(
        result_file=result_name
    )
    if not won:
        return False
    # Won, the merge is this call's alone to finish: no retry of any task would take it up,
    # so the database steps after it are done again here while the database is away.
    job = dbretry.retrying(partial(PredictionJob.objects.get, pk=job_id), "reading a batch job")
    try:
        merged = _merge(job, result_name)
    except OSError as exc:
        if _gone_with_files(job.pk, result_name):
            return False
        logger.exception("merging job %s failed", job_id)
        failing = partial(running.fail, job_id, "merge_failed", str(exc))
        dbretry.retrying(failing, "failing a batch job")
        return False
    finishing = partial(_finish, job, merged, timezone.now())
    finished = dbretry.retrying(finishing, "finishing a batch job")
    shutil.rmtree(work_dir(job.pk), ignore_errors=True)
    if finished:
        waiting.announce_finished([job.pk])
    else:
        _gone_with_files(job.pk, result_name, merged.error_name)
    return True


def _gone_with_files(job_id: UUID, *names: str) -> bool:
    """Whether the job was deleted while its parts were merged; if so, the merged files go
    too (the files it had went with its row: predictions/signals.py)."""
    if PredictionJob.objects.filter(pk=job_id).exists():
        return False
    for name in names:
        if name:
            default_storage.delete(name)
    return True


class Merged(NamedTuple):
    error_name: str  # "" when no row failed
    text_predictions: bool  # class labels are text: read back as text, not inferred


def _merge(job: PredictionJob, result_name: str) -> Merged:
    directory = work_dir(job.pk)
    Path(default_storage.path("results")).mkdir(parents=True, exist_ok=True)
    header_file = directory / "header.json"
    header = json.loads(header_file.read_text(encoding="utf-8")) if header_file.exists() else {}
    parts = sorted((directory / "parts").glob("[0-9]*.csv"))
    names = header.get("names", [])
    batchfiles.concatenate(Path(default_storage.path(result_name)), names, parts)
    text_predictions = bool(header.get("text_predictions"))
    errors = sorted((directory / "parts").glob("errors-*.csv"))
    if not errors:
        return Merged("", text_predictions)
    error_name = f"results/{job.pk}.errors.csv"
    error_header = batchfiles.error_header(job.id_column)
    batchfiles.concatenate(Path(default_storage.path(error_name)), error_header, errors)
    return Merged(error_name, text_predictions)


def _finish(job: PredictionJob, merged: Merged, now: datetime) -> bool:
    """Mark the job succeeded with its TaskResult, in one transaction; False if not running.
    A job none of whose rows could be scored fails instead, its error file saying why.

    True also when the job already ended so at `now`: this very write committed, and only
    its answer was lost.
    """
    if job.rows_failed == job.rows_total:
        return _fail_unscored(job, merged, now)
    with transaction.atomic():
        changed = PredictionJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
            status=Status.SUCCEEDED,
            error_file=merged.error_name,
            text_predictions=merged.text_predictions,
            finished_at=now,
            lease_expires_at=None,
        )
        if not changed:
            done = PredictionJob.objects.filter(pk=job.pk, status=Status.SUCCEEDED, finished_at=now)
            return done.exists()
        job.refresh_from_db()
        taskresults.record_done(
            [(job.task_id, running.summary(job))],
            task_name="predictions.tasks.run_batch_job",
            worker=None,
        )
    return True


def _fail_unscored(job: PredictionJob, merged: Merged, now: datetime) -> bool:
    """Fail a job of which no row could be scored, as a single job whose row cannot be is: a
    success of no predictions told no one that every row was wrong. The result file (its
    header alone) goes; the error file stays, downloadable as a succeeded job's is."""
    failed = PredictionJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
        status=Status.FAILED,
        error_code=NO_ROWS_SCORED,
        error_message=(
            f"none of the {job.rows_total:,} rows could be scored; the error file says why for each"
        ),
        error_file=merged.error_name,
        result_file="",
        finished_at=now,
        lease_expires_at=None,
    )
    ended_so = PredictionJob.objects.filter(pk=job.pk, status=Status.FAILED, finished_at=now)
    if not failed and not ended_so.exists():  # else: this write committed, its answer lost
        return False
    job.result_file.delete(save=False)
    return True


def forget_plan(job: PredictionJob) -> None:
    """Drop a job's chunks, parts and result files, before it runs again from the start."""
    job.chunks.all().delete()
    shutil.rmtree(work_dir(job.pk), ignore_errors=True)
    for name in (job.result_file.name, job.error_file.name):
        if name:
            default_storage.delete(name)
    PredictionJob.objects.filter(pk=job.pk).update(result_file="", error_file="")


def job_of_chunk(chunk_id: int) -> UUID | None:
    return BatchChunk.objects.filter(pk=chunk_id).values_list("job_id", flat=True).first()
