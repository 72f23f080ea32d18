"""One Redis client per process for what we read and write in Redis beside Celery."""

from functools import cache

import redis
from django.conf import settings


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
    )


def queue_depth(queue: str) -> int:
    """Messages waiting in a Celery queue (kombu keeps each queue as a Redis list)."""
    return int(client().llen(queue))
