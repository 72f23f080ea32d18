"""One Redis subscription per process, shared by whatever the process wants to hear.

predictions.waiting hears finished jobs on it and mlsite.freshcache hears cache generations.
A daemon thread, started on first use (and again in a forked child), keeps the subscription
and resubscribes after Redis comes back. Each subscription has an epoch: while the epoch is
unchanged, nothing published on the channels was missed. Handlers run in that thread.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import broker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Channel:
    name: str
    on_message: Callable[[bytes], None]
    on_subscribed: Callable[[], None] = lambda: None  # before the new epoch is announced
    on_lost: Callable[[], None] = lambda: None  # what was published meanwhile is gone


_channels: dict[str, Channel] = {}


def hear(channel: Channel) -> None:
    """Have every process's listener subscribe to `channel` (call at import time)."""
    _channels[channel.name] = channel


def epoch() -> int | None:
    """The current subscription's epoch; None while there is none."""
    return _listener().epoch


def subscribed(timeout: float) -> int | None:
    """Like epoch(), but waits up to `timeout` (at most 2 s) for a listener still starting."""
    return _listener().subscribed(timeout)


class Listener:
    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._epoch = 0
        self._is_subscribed = False
        self._is_down = False  # the last attempt to reach Redis failed
        self._thread: threading.Thread | None = None

    @property
    def epoch(self) -> int | None:
        self._start()
        return self._epoch if self._is_subscribed else None

    def subscribed(self, timeout: float) -> int | None:
        self._start()
        with self._ready:
            self._ready.wait_for(
                lambda: self._is_subscribed or self._is_down, timeout=min(max(timeout, 0), 2.0)
            )
            return self._epoch if self._is_subscribed else None

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._ready:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._listen()
            except broker.UNAVAILABLE as exc:
                logger.warning("listener lost Redis (%s); resubscribing", exc)
            except Exception:  # anything else: never stop listening
                logger.exception("listener failed; resubscribing")
            self._set_subscribed(False)
            time.sleep(0.5)

    def _listen(self) -> None:
        channels = dict(_channels)
        with broker.client().pubsub(ignore_subscribe_messages=True) as subscription:
            subscription.subscribe(*channels)
            for channel in channels.values():
                channel.on_subscribed()
            self._set_subscribed(True)
            while True:
                message = subscription.get_message(timeout=5.0)
                if message is not None:
                    self._deliver(channels[message["channel"].decode()], message["data"])

    @staticmethod
    def _deliver(channel: Channel, data: bytes) -> None:
        try:
            channel.on_message(data)
        except Exception:  # a bad message must not end the subscription for everyone else
            logger.exception("listener: cannot handle a message on %s", channel.name)

    def _set_subscribed(self, is_subscribed: bool) -> None:
        was_subscribed = self._is_subscribed
        with self._ready:
            self._is_down = not is_subscribed
            self._epoch += is_subscribed
            self._is_subscribed = is_subscribed
            self._ready.notify_all()
        if was_subscribed and not is_subscribed:
            for channel in _channels.values():
                channel.on_lost()


_listeners: dict[int, Listener] = {}


def _listener() -> Listener:
    """The process's listener: a forked child gets one of its own."""
    pid = os.getpid()
    if pid not in _listeners:
        _listeners[pid] = Listener()
    return _listeners[pid]
