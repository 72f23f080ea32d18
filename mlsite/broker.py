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


# A key holding the run id of the Redis server that wrote it: gone, or another run's, and
# Redis restarted (or was flushed, or failed over) since; any messages it held may be gone
# with it, all of them without persistence, the last second or snapshot's worth with it.
KEPT_MARKER = "mlqueue:data-kept"


def server_run() -> str:
    """This Redis server's run id, new at each start."""
    return str(client().info("server")["run_id"])


def has_kept_its_data(run: str) -> bool:
    """Whether the marker says Redis has run as `run` since it was last marked."""
    return client().get(KEPT_MARKER) == run.encode()


def mark_data_kept(run: str) -> None:
    """Mark Redis as having kept its data, unless it restarted since `run` was read (the
    messages sent meanwhile may have gone to the server before)."""
    if server_run() == run:
        client().set(KEPT_MARKER, run)
