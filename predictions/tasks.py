"""Celery tasks for prediction jobs: ids in, one domain function call."""

import logging
from dataclasses import asdict
from typing import Any

from celery import shared_task
from celery_batches import SimpleRequest
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from . import batching, heartbeat, reconcile, running, taskresults
from .microbatches import RecoverableBatches
from .models import PredictionJob

# A database that is briefly away (restart, failover, a locked SQLite) is retried with
# backoff: 1, 2, 4 … 60 s. Every task claims before it works, so a retry is harmless.
DB_RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}

logger = logging.getLogger(__name__)


@shared_task(
    base=RecoverableBatches,
    flush_every=settings.PREDICT_FLUSH_EVERY,
    flush_interval=settings.PREDICT_FLUSH_INTERVAL,
)
def score_single_jobs(requests: list[SimpleRequest]) -> int:
    """Score every waiting small job of this micro-batch, one model call per version.

    Each request is one job (args: [job id]); each claimed request's TaskResult gets a summary.
    The micro-batch has up to flush_every requests, taken as they wait in the worker's prefetch
    buffer, so the worker's prefetch limit must allow that many (see the README).
    """
    pairs = [(str(request.args[0]), request.id) for request in requests]
    return _score_single(pairs, score_single_jobs.name, requests[0].hostname)


@shared_task(acks_late=True)
def score_single_job_alone(job_id: str) -> int:
    """Score one single job in a micro-batch of its own: a job whose worker was lost with it.

    Should it be the job that killed the worker (a model that crashes on its input), it takes
    no other job down with it again: each job of the lost micro-batch is charged that one
    attempt, and only the culprit goes on to fail as worker_lost at MAX_ATTEMPTS.
    """
    request = score_single_job_alone.request
    return _score_single([(job_id, request.id)], score_single_job_alone.name, request.hostname)


def _score_single(pairs: list[tuple[str, str]], task_name: str, hostname: str | None) -> int:
    jobs = running.claim_many(pairs)
    if not jobs:
        return 0

    def record(written: list[PredictionJob]) -> None:
        taskresults.record_done(
            [(job.task_id, running.summary(job)) for job in written],
            task_name=task_name,
            worker=hostname,
        )

    with heartbeat.single_jobs.holding(str(job.pk) for job in jobs):
        return len(running.score_jobs(jobs, on_written=record))


@shared_task(acks_late=True, **DB_RETRY)
def run_batch_job(job_id: str) -> dict[str, Any]:
    """Claim a batch job, plan its chunks and send one score_batch_chunk per chunk."""
    try:
        request = run_batch_job.request
        return batching.start(job_id, request.id, retrying=bool(request.retries))
    except DatabaseError:
        raise
    except Exception as exc:
        logger.exception("batch job %s failed to start", job_id)
        running.fail(job_id, "internal_error", f"{type(exc).__name__}: {exc}")
        return {"job": job_id, "error_code": "internal_error"}


@shared_task(acks_late=True, **DB_RETRY)
def score_batch_chunk(chunk_id: int) -> dict[str, Any]:
    """Score one chunk of a batch job; the last chunk to finish merges the result."""
    try:
        request = score_batch_chunk.request
        return batching.score_chunk(chunk_id, request.id, retrying=bool(request.retries))
    except DatabaseError:
        raise
    except Exception as exc:
        logger.exception("chunk %s failed", chunk_id)
        job_id = batching.job_of_chunk(chunk_id)
        if job_id is not None:
            running.fail(job_id, "internal_error", f"{type(exc).__name__}: {exc}")
        return {"chunk": chunk_id, "error_code": "internal_error"}


# No result row: nobody reads them (the reconciler logs what it changes), and a run that
# expired while the worker was busy is then not written as revoked by the worker's main
# process, a write that once stopped a worker after a database restart (mlsite/results.py).
@shared_task(acks_late=True, expires=settings.RECONCILE_INTERVAL, ignore_result=True)
def reconcile_jobs() -> dict[str, int]:
    """Re-send what Redis forgot; re-run or fail what a dead worker held."""
    try:
        outcome = reconcile.reconcile()
    except (OperationalError, InterfaceError) as exc:
        # The database is away: the next pass, RECONCILE_INTERVAL seconds on, does it all
        # again. Raised, it was an ERROR with a long traceback every pass of the outage.
        logger.warning("reconciler skipped a pass: database unavailable (%s)", exc)
        return {}
    return asdict(outcome)
