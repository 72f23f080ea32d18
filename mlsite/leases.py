"""Leases renewed while work runs: one thread per process beats for what it holds.

Work that holds a lease (a single job's micro-batch, a batch chunk, a training run) is
claimed with a short one and renewed every third of it while it runs, so slow work keeps its
claim and work whose process died (kill -9, out of memory) is taken for lost within about a
lease. Work that ends within a third of a lease, nearly all of it, writes no renewal.
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

logger = logging.getLogger(__name__)


class Heartbeat:
    """One kind of lease: its length (the setting named `setting`, read when used), the ids of
    the work this process holds, and the thread that renews their leases every third of it.

    `renew(ids, until)` moves the running ones' lease end to `until`; how many rows changed.
    """

    def __init__(self, setting: str, renew: Callable[[list[str], datetime], int]) -> None:
        self._setting = setting
        self._renew = renew
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

    def seconds(self) -> float:
        return float(getattr(settings, self._setting))

    def until(self, now: datetime) -> datetime:
        """Where a lease taken or renewed at `now` ends."""
        return now + timedelta(seconds=self.seconds())

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def _beat(self) -> None:
        while True:
            time.sleep(self.seconds() / 3)
            # Only what was held since the last beat needs it; newer claims are fresh.
            held = self.held()
            if held:
                self.renew(held)

    def renew(self, held: list[str]) -> int:
        """Renew these leases; how many rows changed."""
        try:
            return self._renew(held, self.until(timezone.now()))
        except DatabaseError as exc:
            # A renewal missed is a lease a third shorter; the next beat tries again. One line:
            # while the database is away, every beat of every pool process comes here.
            logger.warning("could not renew %d lease(s): %s", len(held), exc)
            return 0
        finally:
            connections.close_all()  # this thread's own connections, seldom used
