"""Accepting jobs: validate, write the row, and send its message once the row is committed."""

import logging
from contextlib import nullcontext
from datetime import datetime
from functools import partial
from typing import IO, Any
from uuid import UUID, uuid4

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from mlsite import sending
from mlsite.errors import Conflict
from modelregistry import versions
from modelregistry.models import ModelVersion

from . import inputs
from .jobrows import RowInsert
from .models import Kind, PredictionJob

logger = logging.getLogger(__name__)

TASK_FOR_KIND: dict[str, str] = {
    Kind.SINGLE: "predictions.tasks.score_single_jobs",
    Kind.BATCH: "predictions.tasks.run_batch_job",
}
# A single job run before (its worker was lost with it) is scored in a micro-batch of its own.
RUN_AGAIN_TASK_FOR_KIND = {**TASK_FOR_KIND, Kind.SINGLE: "predictions.tasks.score_single_job_alone"}
NEW_JOB = RowInsert()


class UnusableVersion(Conflict):
    code = "unusable_version"


def usable_version(model_ref: str) -> ModelVersion:
    """The version the reference names; raises UnknownModel, or UnusableVersion for one whose
    artifact a worker found changed or unreadable (its jobs could only fail)."""
    version = versions.resolve(model_ref)
    if not version.is_usable:
        raise UnusableVersion(
            f"{version.ref} is unusable ({version.unusable_reason}): submit to another version"
        )
    return version


def submit_rows(
    owner: User,
    model_ref: str,
    rows: Any,
    *,
    priority: int = 5,
    idempotency_key: str = "",
    one: bool = False,
) -> tuple[PredictionJob, bool]:
    """A job for inline rows, and whether it is new (False: the same key was used before).
    `one`: the row came as `input` (inputs.check_rows names its errors so).

    Raises UnknownModel, UnusableVersion, BadInput or TooManyRows before anything is written.
    """
    existing = _existing(owner, idempotency_key)
    if existing is not None:
        return existing, False
    version = usable_version(model_ref)
    checked = inputs.check_rows(version.registered_model, rows, one=one)
    job = PredictionJob(
        owner=owner,
        kind=Kind.SINGLE,
        inputs=checked,
        rows_total=len(checked),
        **_common(version, model_ref, priority, idempotency_key),
    )
    return _create(job)


def submit_file(
    owner: User,
    model_ref: str,
    upload: IO[bytes],
    *,
    size: int,
    id_column: str = "",
    priority: int = 5,
    idempotency_key: str = "",
) -> tuple[PredictionJob, bool]:
    """A batch job for an uploaded CSV or Parquet file, streamed to storage on save."""
    existing = _existing(owner, idempotency_key)
    if existing is not None:
        return existing, False
    version = usable_version(model_ref)
    file_format = inputs.check_file(version.registered_model, upload, size, id_column)
    job = PredictionJob(
        owner=owner,
        kind=Kind.BATCH,
        input_format=file_format,
        id_column=id_column,
        **_common(version, model_ref, priority, idempotency_key),
    )
    extension = "parquet" if file_format == "parquet" else "csv"
    # Storage copies the upload in blocks; it never sits in memory whole.
    # Storage.save wraps a plain file object in File itself; the stubs want a File.
    job.input_file.save(f"{job.pk}.{extension}", upload, save=False)  # type: ignore[arg-type]
    try:
        answer, created = _create(job)
    except Exception:
        job.input_file.delete(save=False)
        raise
    if not created:  # lost an idempotency race: the winner's job keeps its own file
        job.input_file.delete(save=False)
    return answer, created


def _common(
    version: ModelVersion, model_ref: str, priority: int, idempotency_key: str
) -> dict[str, Any]:
    return {
        "version": version,
        "model_ref": model_ref,
        "artifact_sha256": version.sha256,
        "priority": priority,
        "idempotency_key": idempotency_key,
        "task_id": str(uuid4()),
        "enqueued_at": timezone.now(),
    }


def _existing(owner: User, idempotency_key: str) -> PredictionJob | None:
    if not idempotency_key:
        return None
    # With what its answer shows: no query after a wait, whose connection may have ended.
    repeated = PredictionJob.objects.select_related("version__registered_model", "owner")
    return repeated.filter(owner=owner, idempotency_key=idempotency_key).first()


def _create(job: PredictionJob) -> tuple[PredictionJob, bool]:
    # Outside a transaction the INSERT commits by itself, so SQLite's write lock is held only
    # while the statement runs, not across the Python (and GIL waits) before a COMMIT; other
    # writers then rarely fall into SQLite's sleeping busy handler. Inside one (the admin,
    # tests), a savepoint keeps a duplicate idempotency key from spoiling the outer one.
    own_transaction = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with own_transaction:
            NEW_JOB.run(job)
            transaction.on_commit(partial(send, job.pk, job.kind, job.task_id, job.priority))
    except IntegrityError:
        # Two submissions with one idempotency key raced; the first one's job is the answer.
        existing = _existing(job.owner, job.idempotency_key)
        if existing is None:
            raise
        return existing, False
    return job, True


def send(
    job_id: UUID, kind: str, task_id: str, priority: int = 5, *, run_before: bool = False
) -> bool:
    """Send the job's message; False when the broker is unreachable (the reconciler resends).

    Redis pops priority 0 first, so our 9 (highest) becomes its 0. `run_before`: a job
    claimed before (its worker lost), for RUN_AGAIN_TASK_FOR_KIND.
    """
    task = (RUN_AGAIN_TASK_FOR_KIND if run_before else TASK_FOR_KIND)[kind]
    try:
        sending.publish(task, args=[str(job_id)], task_id=task_id, priority=9 - priority)
    except sending.BrokerUnavailable as exc:
        logger.warning(
            "job %s not sent (%s); the reconciler will send it",
            job_id,
            exc,
            extra={"job_id": str(job_id), "task_id": task_id},
        )
        return False
    return True


def resend(job: PredictionJob, *, now: datetime | None = None) -> bool:
    """Give a queued job a fresh task id and send it again, unless someone else just did.

    A send the broker refused keeps the time of the last one that reached it: the
    reconciler's backoff (reconcile.stale_queued_jobs) counts only messages really queued.
    """
    now = now or timezone.now()
    task_id = str(uuid4())
    changed = PredictionJob.objects.filter(
        pk=job.pk, status=job.status, enqueued_at=job.enqueued_at, task_id=job.task_id
    ).update(task_id=task_id, enqueued_at=now)
    if not changed:
        return False
    if send(job.pk, job.kind, task_id, job.priority, run_before=job.attempts > 0):
        return True
    PredictionJob.objects.filter(pk=job.pk, task_id=task_id).update(enqueued_at=job.enqueued_at)
    return False
