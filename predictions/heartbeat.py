"""Short leases, kept alive while the work they cover runs: single jobs' and batch chunks'.

A claimed single job's lease is SINGLE_JOB_LEASE_SECONDS (90 s), a claimed chunk's
CHUNK_LEASE_SECONDS (90 s), not the whole task time limit: one thread per pool process (one
for each kind) renews the leases of what the process is scoring every third of a lease, so
slow work keeps its claim, and work whose process died (kill -9, out of memory, a worker
stopped hard) stops renewing and the reconciler runs it again within about a lease, where the
time limit's lease held it for 16 minutes. Work that ends within a third of a lease, nearly
all of it, never writes a renewal.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from mlsite.leases import Heartbeat

from .models import BatchChunk, ChunkStatus, PredictionJob, Status


def lease_seconds() -> float:
    return float(settings.SINGLE_JOB_LEASE_SECONDS)


def lease_until(now: datetime) -> datetime:
    """Where a single job's lease taken or renewed at `now` ends."""
    return now + timedelta(seconds=lease_seconds())


def chunk_lease_until(now: datetime) -> datetime:
    """Where a batch chunk's lease taken or renewed at `now` ends."""
    return now + timedelta(seconds=float(settings.CHUNK_LEASE_SECONDS))


def renew_jobs(job_ids: list[str]) -> int:
    """Push running single jobs' leases a whole lease ahead; how many rows changed."""
    running = PredictionJob.objects.filter(pk__in=job_ids, status=Status.RUNNING)
    return running.update(lease_expires_at=lease_until(timezone.now()))


def renew_chunks(chunk_ids: list[str]) -> int:
    """Push running chunks' leases a whole lease ahead; how many rows changed."""
    running = BatchChunk.objects.filter(pk__in=chunk_ids, status=ChunkStatus.RUNNING)
    return running.update(lease_expires_at=chunk_lease_until(timezone.now()))


_single_jobs = Heartbeat(renew_jobs, lease_seconds)
_chunks = Heartbeat(renew_chunks, lambda: float(settings.CHUNK_LEASE_SECONDS))
holding = _single_jobs.holding  # single jobs' ids
holding_chunks = _chunks.holding  # batch chunks' ids
