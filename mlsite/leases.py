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

from django.db import DatabaseError, connections

logger = logging.getLogger(__name__)


class Heartbeat:
    """The ids of the work this process holds, and the thread that renews their leases with
    `renew` every third of `seconds()`."""

    def __init__(self, renew: Callable[[list[str]], int], seconds: Callable[[], float]) -> None:
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
