"""celery-batches, flushed when a pool process is free, and made to survive what the fault
tests do to it: a flush runs under the time limits, its messages are settled when its pool
process dies, and the flush timer comes back after the worker reconnects to the broker."""

import logging
from collections.abc import Callable, Collection
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.app import Celery
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from django.conf import settings

logger = logging.getLogger(__name__)


class RecoverableBatches(Batches):
    """Batches whose flush runs under the task's time limits and settles every message.

    celery-batches acks a flush's messages only when it returns: if the pool process dies
    (kill -9, out of memory, hard time limit) they stay unacked for good, and since unacked
    messages count against the prefetch limit, a worker that loses a few flushes stops
    taking work. Here a lost flush's messages are requeued (reject_on_worker_lost: their
    jobs are claimed already, so the copies are skipped and the reconciler re-runs the jobs
    once their lease expires, up to MAX_ATTEMPTS), and any other failure acks them.
    """

    abstract = True
    _tref: Any  # celery-batches' flush timer (None when none is scheduled)
    _pool: Any  # the worker's pool, set by celery-batches' Strategy

    def Strategy(self, task: Batches, app: Celery, consumer: Consumer) -> Callable:
        """celery-batches' message handler, re-arming a flush timer the consumer dropped.

        On a broker reconnect Celery clears its timer; celery-batches still holds the dropped
        entry and never starts another, so its buffer (and with it the prefetch window) only
        empties when flush_every requests arrive: with fewer, the worker stalls for good.
        """
        handle = super().Strategy(task, app, consumer)
        timer = consumer.timer

        def handle_with_live_timer(*args: Any, **kwargs: Any) -> None:
            if self._tref is not None and not _is_scheduled(timer, self._tref):
                self._tref = None  # the handler starts a new timer when it sees None
            handle(*args, **kwargs)
            self._flush_if_allowed()  # at once when allowed: a lone job never waits

        return handle_with_live_timer

    def _do_flush(self) -> None:
        """Flush only when _flushes_allowed() says one may start; otherwise the requests keep
        gathering.

        celery-batches flushes every flush_interval whether or not the pool can take the
        micro-batch, so under load the pool queued batches of one or two jobs and paid a model
        call and a round of writes for each (bench/: 3-6 ms of worker CPU per job). Held back
        until a process frees up, the waiting requests go as one batch; the flush that frees
        the process takes them (flush()'s callbacks). The timer stays as the backstop.
        """
        if self._flushes_allowed() == 0:
            return
        super()._do_flush()

    def _flush_if_allowed(self) -> None:
        if self._flushes_allowed() and not self._buffer.empty():
            super()._do_flush()

    def _flushes_allowed(self) -> int | None:
        """How many more flushes may start now, from billiard's own table of what it was handed
        and has not returned (no counter of ours to drift): a process must be free, and fewer
        than PREDICT_FLUSHES_AT_ONCE of this task's flushes running. None for other pools
        (solo, threads): they cannot tell, so they keep celery-batches' timer alone.

        One flush at a time by default: a second one running beside it halves both batches and
        doubles the per-batch writes, for CPU the web and the broker want too (bench/: a fifth
        less worker CPU per single job on two cores, and more jobs a second). The price: while a
        flush is stuck (a model that hangs), this worker's other single jobs wait for its time
        limit.
        """
        handed_out = getattr(getattr(self._pool, "_pool", None), "_cache", None)
        if handed_out is None:
            return None
        flushing = sum(
            1
            for job in list(handed_out.values())
            if getattr(job, "correlation_id", None) == self.name
        )
        processes = max(self._pool.num_processes or 1, 1)
        return max(min(processes - len(handed_out), settings.PREDICT_FLUSHES_AT_ONCE - flushing), 0)

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        late = [request for request in requests if request.task.acks_late]
        early = [request for request in requests if not request.task.acks_late]
        limits = self._time_limits()

        def on_accepted(pid: int, time_accepted: float) -> None:
            for request in early:
                request.acknowledge()

        def on_return(result: Any) -> None:
            for request in late:
                request.acknowledge()
            self._flush_if_allowed()

        def on_error(einfo: ExceptionInfo | BaseException) -> None:
            exception = raised(einfo)
            lost = isinstance(exception, WorkerLostError)
            logger.warning("micro-batch of %d lost: %r", len(requests), exception)
            for request in late:
                if lost and self._requeues_lost_work():
                    request.reject(requeue=True)
                else:
                    request.acknowledge()
            self._flush_if_allowed()

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(request) for request in requests],), 0, None),
            accept_callback=on_accepted,
            callback=on_return,
            error_callback=on_error,
            correlation_id=self.name,  # marks this task's flushes in the pool's table
            **limits,
        )

    def _requeues_lost_work(self) -> bool:
        if self.reject_on_worker_lost is not None:
            return bool(self.reject_on_worker_lost)
        return bool(self.app.conf.task_reject_on_worker_lost)

    def _time_limits(self) -> dict[str, float | None]:
        conf = self.app.conf
        return {
            "timeout": self.time_limit or conf.task_time_limit,
            "soft_timeout": self.soft_time_limit or conf.task_soft_time_limit,
        }


def raised(error: ExceptionInfo | BaseException) -> BaseException:
    """The exception a pool's error callback was given, unwrapped: billiard hands over an
    ExceptionInfo whose exception is an ExceptionWithTraceback around the real one (a lost
    process's WorkerLostError looked like no such error, so its messages were acked)."""
    exception = getattr(error, "exception", error)
    return exception.exc if isinstance(exception, ExceptionWithTraceback) else exception


def _is_scheduled(timer: Any, entry: Any) -> bool:
    return any(scheduled[2] is entry for scheduled in timer.schedule._queue)
