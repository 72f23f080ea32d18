"""Beat's scheduler: django-celery-beat's DatabaseScheduler plus a heartbeat in Redis."""

import logging
import time
from typing import Any

from django.db import InterfaceError, OperationalError
from django_celery_beat.schedulers import DatabaseScheduler

from . import broker

logger = logging.getLogger(__name__)
HEARTBEAT_KEY = "mlsite:beat:heartbeat"
HEARTBEAT_TTL = 60


class HeartbeatScheduler(DatabaseScheduler):
    """Writes the time of every tick to Redis, so /healthz can tell that beat is alive, and
    keeps the schedule it has while the database is away."""

    def all_as_schedule(self) -> dict[str, Any]:
        """The schedule read from the database, or, once beat has one, that one while the
        database does not answer. django-celery-beat reads it again every 5 minutes outside
        its own error handling: an outage at that moment ended beat, and the reconciler with
        it. A change is read at the next change or full sync once the database is back."""
        try:
            return super().all_as_schedule()
        except (OperationalError, InterfaceError) as exc:  # away, not a schema to fix
            if self._schedule is None:  # starting up: nothing to keep
                raise
            logger.warning("beat keeps its schedule: database unavailable (%s)", exc)
            return self._schedule

    def tick(self, *args: object, **kwargs: object) -> float:
        delay = super().tick(*args, **kwargs)
        try:
            broker.client().set(HEARTBEAT_KEY, time.time(), ex=HEARTBEAT_TTL)
        except broker.UNAVAILABLE:
            logger.warning("beat heartbeat not written: Redis unavailable")
        return delay
