"""Waiting for jobs to finish without polling.

Workers announce finished jobs on one Redis channel; each web process listens to it with one
thread that wakes the requests waiting for those jobs. A small job's announcement carries its
final state, so the request answers without reading the row back; other announcements only
say "finished" and the request reads the row. While Redis is away, waits answer at once.
"""

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import redis
from django.db.models import Field

from mlsite import broker

from .models import FINISHED, Kind, PredictionJob

logger = logging.getLogger(__name__)
CHANNEL = "mlsite:jobs-finished"
# What a worker changes when it finishes a small job: the announcement carries these.
FINAL_FIELDS = (
    "status",
    "outputs",
    "rows_done",
    "rows_failed",
    "error_code",
    "error_message",
    "attempts",
    "task_id",
    "started_at",
    "finished_at",
    "lease_expires_at",
)
MAX_ANNOUNCED_ROWS = 100  # larger outputs are read from the database by the waiting request
RECENT_ANNOUNCEMENTS = 10_000  # kept per process: a wait that starts just after still sees one


def announce_finished(jobs: Iterable[PredictionJob | UUID | str]) -> None:
    """Tell waiting requests these jobs finished; a lost message only costs a wait.

    A small job given as a row travels with its final state; an id travels alone.
    """
    entries = [_entry(job) for job in jobs]
    if not entries:
        return
    try:
        broker.client().publish(CHANNEL, json.dumps(entries, default=_isoformat))
    except redis.RedisError:
        logger.warning("could not announce %d finished job(s): Redis unavailable", len(entries))


def wait_until_finished(
    job: PredictionJob, seconds: float, *, heard_since: int | None = None
) -> PredictionJob:
    """The job once it finished, or re-read when `seconds` passed, whichever comes first.

    `heard_since` is listening_epoch() read before the job's message was sent: while the
    listener has stayed subscribed since then, every announcement of the job reaches it, and
    the database need not be asked whether the job finished meanwhile.
    """
    if seconds <= 0 or job.is_finished:
        return job
    deadline = time.monotonic() + seconds
    listener = _listener()
    # Only a job created after the listener subscribed may look among recent announcements:
    # any other may have been announced before, for an earlier attempt.
    with listener.expect(str(job.pk), see_recent=heard_since is not None) as waiter:
        while True:
            epoch = listener.subscribed(timeout=deadline - time.monotonic())
            if epoch is None:  # Redis is away: answer with what the database says now
                return _reload(job)
            if epoch != heard_since and _status_of(job.pk) in FINISHED:
                return _reload(job)
            heard_since = epoch
            if not waiter.wait(deadline - time.monotonic()):
                return _reload(job)
            if waiter.state is not None:
                return _apply(job, waiter.state)
            if waiter.finished:
                return _reload(job)
            # The listener lost its subscription: ask the database again once it is back.


def listening_epoch() -> int | None:
    """Which continuous subscription this process listens with now; None when it does not."""
    return _listener().epoch


def _entry(job: PredictionJob | UUID | str) -> dict[str, Any]:
    if not isinstance(job, PredictionJob):
        return {"id": str(job)}
    if job.kind != Kind.SINGLE or len(job.outputs or ()) > MAX_ANNOUNCED_ROWS:
        return {"id": str(job.pk)}
    return {"id": str(job.pk), "state": {name: getattr(job, name) for name in FINAL_FIELDS}}


def _isoformat(value: datetime) -> str:
    return value.isoformat()  # full precision, as the database gives it back


def _apply(job: PredictionJob, state: dict[str, Any]) -> PredictionJob:
    for name, value in state.items():
        field = cast(Field, PredictionJob._meta.get_field(name))
        setattr(job, name, field.to_python(value))
    return job


def _reload(job: PredictionJob) -> PredictionJob:
    return PredictionJob.objects.select_related("version__registered_model", "owner").get(pk=job.pk)


def _status_of(job_id: UUID) -> str:
    return PredictionJob.objects.filter(pk=job_id).values_list("status", flat=True).get()


class Waiter:
    """One request's wait for one job: woken by its announcement or by a lost subscription."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.finished = False
        self.state: dict[str, Any] | None = None

    def wait(self, seconds: float) -> bool:
        woken = seconds > 0 and self._event.wait(seconds)
        self._event.clear()
        return woken

    def wake(self, entry: dict[str, Any] | None) -> None:
        if entry is not None:
            self.finished = True
            self.state = entry.get("state")
        self._event.set()


class Listener:
    """The process's one subscription to CHANNEL, in a daemon thread started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Waiter]] = {}
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._ready = threading.Condition(self._lock)
        self._epoch = 0
        self._is_subscribed = False
        self._is_down = False  # the last attempt to reach Redis failed
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @property
    def epoch(self) -> int | None:
        self._start()
        with self._lock:
            return self._epoch if self._is_subscribed else None

    def subscribed(self, timeout: float) -> int | None:
        """The current subscription's epoch; None while Redis is away.

        Only a listener still starting is waited for (up to `timeout`, at most 2 s).
        """
        self._start()
        with self._ready:
            self._ready.wait_for(
                lambda: self._is_subscribed or self._is_down, timeout=min(max(timeout, 0), 2.0)
            )
            return self._epoch if self._is_subscribed else None

    @contextmanager
    def expect(self, job_id: str, *, see_recent: bool) -> Iterator[Waiter]:
        waiter = Waiter()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
            if see_recent and job_id in self._recent:  # announced just before the wait began
                waiter.wake(self._recent[job_id])
        try:
            yield waiter
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id, set())
                waiting.discard(waiter)
                if not waiting:
                    self._waiters.pop(job_id, None)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked child needs a thread of its own
            self._is_subscribed = False
            self._thread = threading.Thread(target=self._run, name="job-listener", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                logger.warning("job listener lost Redis (%s); resubscribing", exc)
            self._set_subscribed(False, is_down=True)
            time.sleep(0.5)

    def _listen(self) -> None:
        with broker.client().pubsub(ignore_subscribe_messages=True) as subscription:
            subscription.subscribe(CHANNEL)
            self._set_subscribed(True)
            while True:
                message = subscription.get_message(timeout=5.0)
                if message is not None:
                    self._deliver(json.loads(message["data"]))

    def _deliver(self, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            for entry in entries:
                job_id = entry["id"]
                self._recent[job_id] = entry
                for waiter in self._waiters.get(job_id, ()):
                    waiter.wake(entry)
            while len(self._recent) > RECENT_ANNOUNCEMENTS:
                self._recent.popitem(last=False)

    def _set_subscribed(self, is_subscribed: bool, *, is_down: bool = False) -> None:
        with self._ready:
            self._is_down = is_down
            if is_subscribed:
                self._epoch += 1
            elif self._is_subscribed:  # what was announced meanwhile is lost: everyone re-asks
                for waiters in self._waiters.values():
                    for waiter in waiters:
                        waiter.wake(None)
            self._is_subscribed = is_subscribed
            self._ready.notify_all()


_listeners: dict[int, Listener] = {}


def _listener() -> Listener:
    """The process's listener (one per process: a forked child gets its own)."""
    pid = os.getpid()
    if pid not in _listeners:
        _listeners[pid] = Listener()
    return _listeners[pid]
