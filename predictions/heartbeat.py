"""Single jobs' leases, kept alive while their micro-batch runs.

A claimed single job's lease is SINGLE_JOB_LEASE_SECONDS (90 s), not the whole task time
limit: one thread per pool process renews the leases of the jobs it is scoring every third
of that, so a slow micro-batch keeps its jobs, and one whose process died (kill -9, out of
memory, a worker stopped hard) stops renewing and the reconciler re-runs its jobs within
about a lease, where the time limit's lease held them for 16 minutes. A micro-batch that
ends within a third of a lease, nearly all of them, never writes a renewal.
"""

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from .models import PredictionJob, Status

logger = logging.getLogger(__name__)


def lease_seconds() -> float:
    return float(settings.SINGLE_JOB_LEASE_SECONDS)


def lease_until(now: datetime) -> datetime:
    """Where a single job's lease taken or renewed at `now` ends."""
    return now + timedelta(seconds=lease_seconds())


class Heartbeat:
    """The job ids this process is scoring, and the thread that renews their leases."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # job id -> how many holders (a job sent twice)
        self._lock = threading.Lock()
        self._owner_pid = 0  # the process whose thread runs: a forked child starts its own

    @contextmanager
    def holding(self, job_ids: Iterable[str]) -> Iterator[None]:
        ids = [str(job_id) for job_id in job_ids]
        with self._lock:
            for job_id in ids:
                self._held[job_id] = self._held.get(job_id, 0) + 1
            if self._owner_pid != os.getpid():
                self._owner_pid = os.getpid()
                threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                for job_id in ids:
                    if self._held.get(job_id, 0) <= 1:
                        self._held.pop(job_id, None)
                    else:
                        self._held[job_id] -= 1

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def _beat(self) -> None:
        while True:
            time.sleep(lease_seconds() / 3)
            # Only jobs held since the last beat need it; newer ones have a fresh lease.
            job_ids = self.held()
            if job_ids:
                self.renew(job_ids)

    def renew(self, job_ids: list[str]) -> int:
        """Push the running jobs' leases a whole lease ahead; how many rows changed."""
        try:
            return PredictionJob.objects.filter(pk__in=job_ids, status=Status.RUNNING).update(
                lease_expires_at=lease_until(timezone.now())
            )
        except DatabaseError:
            # A renewal missed is a lease a third shorter; the next beat tries again.
            logger.warning("could not renew %d single job lease(s)", len(job_ids), exc_info=True)
            return 0
        finally:
            connections.close_all()  # this thread's own connections, seldom used


_process_heartbeat = Heartbeat()
holding = _process_heartbeat.holding
