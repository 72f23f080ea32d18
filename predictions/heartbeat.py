"""Short leases, kept alive while the work they cover runs: single jobs' and batch chunks'.

A claimed single job's lease is SINGLE_JOB_LEASE_SECONDS (90 s), a claimed chunk's
CHUNK_LEASE_SECONDS (90 s), not the whole task time limit: one thread per pool process (one
for each kind) renews the leases of what the process is scoring every third of a lease, so
slow work keeps its claim, and work whose process died (kill -9, out of memory, a worker
stopped hard) stops renewing and the reconciler runs it again within about a lease, where the
time limit's lease held it for 16 minutes. Work that ends within a third of a lease, nearly
all of it, never writes a renewal.
"""

from datetime import datetime

from mlsite.leases import Heartbeat

from .models import BatchChunk, ChunkStatus, PredictionJob, Status


def renew_jobs(job_ids: list[str], until: datetime) -> int:
    """Move running single jobs' lease end to `until`; how many rows changed."""
    running = PredictionJob.objects.filter(pk__in=job_ids, status=Status.RUNNING)
    return running.update(lease_expires_at=until)


def renew_chunks(chunk_ids: list[str], until: datetime) -> int:
    """Move running chunks' lease end to `until`; how many rows changed."""
    running = BatchChunk.objects.filter(pk__in=chunk_ids, status=ChunkStatus.RUNNING)
    return running.update(lease_expires_at=until)


single_jobs = Heartbeat("SINGLE_JOB_LEASE_SECONDS", renew_jobs)
chunks = Heartbeat("CHUNK_LEASE_SECONDS", renew_chunks)
