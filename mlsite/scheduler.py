"""Beat's scheduler: django-celery-beat's DatabaseScheduler plus a heartbeat in Redis."""

import logging
import time

from django_celery_beat.schedulers import DatabaseScheduler

from . import broker

logger = logging.getLogger(__name__)
HEARTBEAT_KEY = "mlsite:beat:heartbeat"
HEARTBEAT_TTL = 60


class HeartbeatScheduler(DatabaseScheduler):
    """Writes the time of every tick to Redis, so /healthz can tell that beat is alive."""

    def tick(self, *args: object, **kwargs: object) -> float:
        delay = super().tick(*args, **kwargs)
        try:
            broker.client().set(HEARTBEAT_KEY, time.time(), ex=HEARTBEAT_TTL)
        except broker.UNAVAILABLE:
            logger.warning("beat heartbeat not written: Redis unavailable")
        return delay
