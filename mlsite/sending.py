"""Sending task messages without letting a Redis outage hold up the process that sends them."""

import logging
import os
import threading
import time
from typing import Any
from uuid import uuid4

from celery.utils.nodenames import anon_nodename
from django.conf import settings
from kombu import Producer

from .celery import app

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The message was not sent: the broker failed just now, or failed a moment ago."""


class _Breaker:
    """Open for BROKER_RETRY_AFTER seconds after a failed send: sends fail at once meanwhile.

    Per process. The caller's row is the source of truth and the reconciler re-sends what
    was not sent, so skipping a send only delays it; waiting for a socket timeout on every
    request while Redis is down would tie up every web thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0

    def check(self) -> None:
        if time.monotonic() < self._open_until:
            raise BrokerUnavailable("broker unavailable a moment ago; not trying again yet")

    def trip(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + settings.BROKER_RETRY_AFTER

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0


breaker = _Breaker()
_local = threading.local()


def publish(name: str, *, args: list[Any], task_id: str | None = None, priority: int = 0) -> None:
    """Send one task message; raises BrokerUnavailable instead of kombu's many errors.

    The message is made and sent by Celery's own two steps, app.amqp.create_task_message and
    send_task_message, with what app.send_task would add for us: the route (static, so looked
    up once per task name), the parent and root ids inside a task, the child in the parent's
    trail. What send_task does besides (checks for options we never pass, an AsyncResult we
    never read, the results backend's on_task_call, a no-op for django-db) cost a twentieth
    of the web's CPU per single job (bench/).
    """
    breaker.check()
    task_id = task_id or str(uuid4())
    parent = app.current_worker_task
    try:
        message = app.amqp.create_task_message(
            task_id,
            name,
            args,
            {},
            reply_to=app.thread_oid,
            origin=_origin(),
            create_sent_event=app.conf.task_send_sent_event,
            root_id=parent and (parent.request.root_id or parent.request.id),
            parent_id=parent and parent.request.id,
            # Our args are a few ids: repr() is what Celery's saferepr would give, at a
            # fraction of its cost.
            argsrepr=repr(args),
            kwargsrepr="{}",
        )
        app.amqp.send_task_message(
            _producer(),
            name,
            message,
            priority=priority,
            # Our queues take the default exchange's routing, straight to the queue's list,
            # which needs no binding. kombu's declare, cached or not, copies and binds the
            # queue on every send (with the repr above, a send took 414 -> ~300 us of CPU,
            # timed in-process against Redis).
            declare=[],
            **_route(name),
        )
    except Exception as exc:  # kombu and redis-py raise several kinds when Redis is down
        _drop_producer()
        breaker.trip()
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if parent is not None:  # as send_task does: the parent's result lists its children
        parent.add_trail(app.AsyncResult(task_id))


_routes: dict[str, dict[str, Any]] = {}


def _route(name: str) -> dict[str, Any]:
    """Where CELERY_TASK_ROUTES sends `name` (our routes name tasks, not arguments)."""
    if name not in _routes:
        _routes[name] = app.amqp.router.route({}, name)
    return _routes[name]


_origins: dict[int, str] = {}


def _origin() -> str:
    """Celery's anon_nodename() for this process (gen<pid>@<host>), which send_task works out
    afresh, host name system call included, for every message: 1.2 % of the web's CPU (py-spy)."""
    pid = os.getpid()
    if pid not in _origins:
        _origins[pid] = anon_nodename()
    return _origins[pid]


def _producer() -> Producer:
    """This thread's producer, on a broker connection of its own made at its first send.

    Taking a producer from Celery's pool and giving it back cost a fifth of a send; a web
    request thread that keeps its own sent 7 % more single jobs a second (bench/). A forked
    child makes its own: a connection shared with its parent would mix their commands.
    """
    held: tuple[int, Producer] | None = getattr(_local, "held", None)
    if held is None or held[0] != os.getpid():
        producer = app.amqp.Producer(app.connection_for_write(), auto_declare=False)
        held = _local.held = (os.getpid(), producer)
    return held[1]


def _drop_producer() -> None:
    """Forget this thread's producer after a failed send; the next send connects afresh."""
    held: tuple[int, Producer] | None = getattr(_local, "held", None)
    _local.held = None
    if held is not None and held[0] == os.getpid():
        held[1].connection.collect()  # frees the connection without talking to the broker
