"""Waiting for a job to finish without polling: workers publish on a Redis channel per job."""

import logging
import time
from collections.abc import Iterable
from uuid import UUID

import redis

from mlsite import broker

from .models import FINISHED, PredictionJob

logger = logging.getLogger(__name__)
CHANNEL_PREFIX = "mlsite:job-finished:"


def channel(job_id: UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{job_id}"


def announce_finished(job_ids: Iterable[UUID | str]) -> None:
    """Tell waiting API requests that these jobs finished; a lost message only costs a wait."""
    ids = list(job_ids)
    if not ids:
        return
    try:
        pipe = broker.client().pipeline(transaction=False)
        for job_id in ids:
            pipe.publish(channel(job_id), b"1")
        pipe.execute()
    except redis.RedisError:
        logger.warning("could not announce %d finished job(s): Redis unavailable", len(ids))


def wait_until_finished(job: PredictionJob, seconds: float) -> PredictionJob:
    """The job, re-read once it finished or `seconds` passed, whichever comes first.

    Subscribes before reading the row, so a job finishing in between is never missed.
    """
    if seconds <= 0 or job.is_finished:
        return job
    deadline = time.monotonic() + seconds
    try:
        with broker.client().pubsub(ignore_subscribe_messages=True) as subscription:
            subscription.subscribe(channel(job.pk))
            if _status_of(job.pk) in FINISHED:
                return _reload(job.pk)
            while (left := deadline - time.monotonic()) > 0:
                if subscription.get_message(timeout=left) is not None:
                    break
    except redis.RedisError:
        logger.warning(
            "waiting on job %s without Redis: answering at once",
            job.pk,
            extra={"job_id": str(job.pk)},
        )
    return _reload(job.pk)


def _reload(job_id: UUID) -> PredictionJob:
    return PredictionJob.objects.select_related("version__registered_model").get(pk=job_id)


def _status_of(job_id: UUID) -> str:
    return PredictionJob.objects.filter(pk=job_id).values_list("status", flat=True).get()
