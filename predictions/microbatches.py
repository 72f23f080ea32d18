"""celery-batches, with the two guarantees every other task of ours has: a time limit, and
its messages settled when the pool process running the micro-batch dies."""

import logging
from collections.abc import Collection
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

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

        def on_error(einfo: ExceptionInfo | BaseException) -> None:
            exception = getattr(einfo, "exception", einfo)
            lost = isinstance(exception, WorkerLostError)
            logger.warning("micro-batch of %d lost: %r", len(requests), exception)
            for request in late:
                if lost and self._requeues_lost_work():
                    request.reject(requeue=True)
                else:
                    request.acknowledge()

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(request) for request in requests],), 0, None),
            accept_callback=on_accepted,
            callback=on_return,
            error_callback=on_error,
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
