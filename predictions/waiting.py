"""Waiting for jobs to finish without polling.

Workers announce finished jobs on one Redis channel; each web process listens to it with one
thread that wakes the requests waiting for those jobs. A small job's announcement carries its
final state, so the request answers without reading the row back; other announcements only
say "finished" and the request reads the row. While Redis is away, waits answer at once.
"""

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast
from uuid import UUID

from django.db import OperationalError, connection
from django.db.models import Field

from mlsite import broker, listening

from .models import FINISHED, Kind, PredictionJob

logger = logging.getLogger(__name__)
T = TypeVar("T")
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
    except broker.UNAVAILABLE:
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
    # Only a job created after the listener subscribed may look among recent announcements:
    # any other may have been announced before, for an earlier attempt.
    with _waiting.expect(str(job.pk), see_recent=heard_since is not None) as waiter:
        while True:
            epoch = listening.subscribed(timeout=deadline - time.monotonic())
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
    """Which continuous subscription this process listens with now; None when it does not.

    A request calls this before it sends the job it will wait for: from then on the process
    remembers the announcements it hears.
    """
    _waiting.keep_announcements()
    return listening.epoch()


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
    jobs = PredictionJob.objects.select_related("version__registered_model", "owner")
    return _read(lambda: jobs.get(pk=job.pk))


def _status_of(job_id: UUID) -> str:
    status = PredictionJob.objects.filter(pk=job_id).values_list("status", flat=True)
    return _read(status.get)


def _read(query: Callable[[], T]) -> T:
    """The query's answer, asked once more on a new connection if the server ended the
    request's (a restart, a failover, an idle timeout): a wait can outlast it, and the job,
    committed before the wait, was answered 503 "try again", which clients without an
    idempotency key did. A read only, and none inside a transaction, whose connection stays;
    a connection that still answers (SQLite locked past its busy timeout) raises at once."""
    try:
        return query()
    except OperationalError:
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()
        return query()


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


class Waiting:
    """The requests of this process waiting for jobs, and the announcements just heard."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Waiter]] = {}
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._keeping = False

    def keep_announcements(self) -> None:
        """Handle what is announced from now on. Until a request of this process waits, none of
        it can matter here, so a process that never waits (a worker: its listener is there
        for the caches) neither parses every finished batch nor holds the last ten thousand."""
        self._keeping = True

    @contextmanager
    def expect(self, job_id: str, *, see_recent: bool) -> Iterator[Waiter]:
        waiter = Waiter()
        self.keep_announcements()
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

    def deliver(self, data: bytes) -> None:
        if not self._keeping:
            return
        entries = json.loads(data)
        with self._lock:
            for entry in entries:
                job_id = entry["id"]
                self._recent[job_id] = entry
                for waiter in self._waiters.get(job_id, ()):
                    waiter.wake(entry)
            while len(self._recent) > RECENT_ANNOUNCEMENTS:
                self._recent.popitem(last=False)

    def wake_all(self) -> None:
        """The subscription was lost: every waiting request asks the database again."""
        with self._lock:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.wake(None)


_waiting = Waiting()
listening.hear(listening.Channel(CHANNEL, _waiting.deliver, on_lost=_waiting.wake_all))
