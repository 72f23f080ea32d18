"""Process-local caches of rows that rarely change, kept fresh across processes by Redis.

Every submission resolves a model reference and authenticates a token: two ORM queries that
cost more CPU than the rest of the request (bench/, py-spy). Each cached value is tagged with
the generation current before the rows were read: a counter in Redis that whoever changes such
rows bumps after commit (see mlsite/apps.py) and publishes; each process hears it on its one
subscription (mlsite/listening.py), so a read costs no round trip at all. A lost subscription
is a new epoch, which no entry matches; while there is none, the cache is skipped.
"""

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.conf import settings
from django.db import transaction

from mlsite import broker, listening

logger = logging.getLogger(__name__)
GENERATION_KEY = "mlsite:cache-generation"
MAX_ENTRIES = 10_000  # per cache; a full cache starts over (no attacker-sized growth)

Value = TypeVar("Value")
_caches: list["FreshCache"] = []


class FreshCache(Generic[Value]):
    """A dict of loaded values, trusted while the generation they were loaded in is current."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[Value, tuple[int, int], float]] = {}
        self._lock = threading.Lock()
        _caches.append(self)

    def get(self, key: Hashable, load: Callable[[], Value]) -> Value:
        """The cached value, or `load()`'s (cached unless it raised)."""
        # A backstop: even a missed bump is forgotten after this long.
        seconds = settings.FRESH_CACHE_SECONDS
        generation = current_generation() if seconds > 0 else None
        if generation is None:
            return load()
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[1] == generation and entry[2] > now:
            return entry[0]
        value = load()
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (value, generation, now + seconds)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def current_generation() -> tuple[int, int] | None:
    """(subscription epoch, counter) now; None when unknown (callers read the database)."""
    epoch, counter = listening.epoch(), _counter
    if epoch is None or counter is None:
        return None
    return epoch, counter


def rows_changed() -> None:
    """Cached rows changed: forget them here now, and everywhere once the change commits."""
    for each in _caches:
        each.clear()
    transaction.on_commit(_bump)


def _bump() -> None:
    try:
        client = broker.client()
        client.publish(GENERATION_KEY, client.incr(GENERATION_KEY))
    except broker.UNAVAILABLE:
        # Caches elsewhere keep the old rows for at most FRESH_CACHE_SECONDS.
        logger.warning("could not bump the cache generation: Redis unavailable")


_counter: int | None = None  # the generation last heard; None while not subscribed


def _heard(data: bytes) -> None:
    global _counter
    _counter = max(int(data), _counter or 0)


def _read_counter() -> None:
    """Just subscribed: what the counter is now (bumps from here on are heard)."""
    global _counter
    _counter = int(broker.client().get(GENERATION_KEY) or 0)


def _forget_counter() -> None:
    global _counter
    _counter = None


listening.hear(
    listening.Channel(GENERATION_KEY, _heard, on_subscribed=_read_counter, on_lost=_forget_counter)
)
