"""One Redis client per process for what we read and write in Redis beside Celery."""

from functools import cache

import redis
from django.conf import settings

# What a Redis call of ours can raise when Redis is slow or away. redis-py means to raise
# RedisError only, but when a read times out its retry can hit the connection's closed read
# buffer and raise ValueError ("I/O operation on closed file": seen in CI in a model load's
# metrics write, and in the listener), and a socket error can come through as OSError.
UNAVAILABLE: tuple[type[Exception], ...] = (redis.RedisError, OSError, ValueError)


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
    )


# kombu keeps each queue as Redis lists, one per priority step: "predict" for priority 0 and
# "predict\x06\x163", "…6", "…9" for messages sent with a priority (kombu's defaults).
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists of a queue, in the order kombu's consumers pop them."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


def queue_depth(queue: str) -> int:
    """Messages waiting in a Celery queue, over all its priority lists."""
    with client().pipeline(transaction=False) as pipe:
        for key in queue_keys(queue):
            pipe.llen(key)
        return sum(int(size) for size in pipe.execute())


# A key that lives as long as Redis's data does: gone, the data went with it (a Redis
# without persistence restarted, or was flushed), queued messages included.
KEPT_MARKER = "mlqueue:data-kept"


def has_kept_its_data() -> bool:
    """False the first time after Redis lost its data (or was first used), until marked."""
    return bool(client().exists(KEPT_MARKER))


def mark_data_kept() -> None:
    client().set(KEPT_MARKER, "1")
