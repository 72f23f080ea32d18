"""Short leases, kept alive while the work they cover runs: single jobs' and batch chunks'.

A claimed single job's lease is SINGLE_JOB_LEASE_SECONDS (90 s), a claimed chunk's
CHUNK_LEASE_SECONDS (90 s), not the whole task time limit: one thread per pool process (one
for each kind) renews the leases of what the process is scoring every third of a lease, so
slow work keeps its claim, and work whose process died (kill -9, out of memory, a worker
stopped hard) stops renewing and the reconciler runs it again within about a lease, where the
time limit's lease held it for 16 minutes. Work that ends within a third of a lease, nearly
all of it, never writes a renewal.
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from .models import BatchChunk, ChunkStatus, PredictionJob, Status

logger = logging.getLogger(__name__)


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


class Heartbeat:
    """The ids this process is scoring, and the thread that renews their leases with `renew`
    every third of `seconds()`."""

    def __init__(
        self,
        renew: Callable[[list[str]], int] = renew_jobs,
        seconds: Callable[[], float] = lease_seconds,
    ) -> None:
        self._renew = renew
        self._seconds = seconds
        self._held: dict[str, int] = {}  # id -> how many holders (a job sent twice)
        self._lock = threading.Lock()
        self._owner_pid = 0  # the process whose thread runs: a forked child starts its own

    @contextmanager
    def holding(self, held_ids: Iterable[object]) -> Iterator[None]:
        ids = [str(held) for held in held_ids]
        with self._lock:
            for one in ids:
                self._held[one] = self._held.get(one, 0) + 1
            if self._owner_pid != os.getpid():
                self._owner_pid = os.getpid()
                threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                for one in ids:
                    if self._held.get(one, 0) <= 1:
                        self._held.pop(one, None)
                    else:
                        self._held[one] -= 1

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def _beat(self) -> None:
        while True:
            time.sleep(self._seconds() / 3)
            # Only what was held since the last beat needs it; newer claims are fresh.
            held = self.held()
            if held:
                self.renew(held)

    def renew(self, held: list[str]) -> int:
        """Renew these leases; how many rows changed."""
        try:
            return self._renew(held)
        except DatabaseError:
            # A renewal missed is a lease a third shorter; the next beat tries again.
            logger.warning("could not renew %d lease(s)", len(held), exc_info=True)
            return 0
        finally:
            connections.close_all()  # this thread's own connections, seldom used


_single_jobs = Heartbeat(renew_jobs, lease_seconds)
_chunks = Heartbeat(renew_chunks, lambda: float(settings.CHUNK_LEASE_SECONDS))
holding = _single_jobs.holding  # single jobs' ids
holding_chunks = _chunks.holding  # batch chunks' ids
