"""What the admin dashboard shows: jobs, queues, workers, beat, and the last hour.

Plain functions that read the database, Redis and the workers (with short timeouts), so
the page answers even when a part of the stack does not; each part says when it is down.
"""

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F
from django.db.models.functions import TruncMinute
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from . import broker
from .celery import app as celery_app
from .scheduler import HEARTBEAT_KEY

logger = logging.getLogger(__name__)

QUEUES = ("predict", "batch", "training", "default")
INSPECT_TIMEOUT = 0.75  # seconds; every worker that answers within it is shown
BEAT_STALE_AFTER = 30  # seconds; beat ticks at least every 5 s
POSITION_SCAN_LIMIT = 10_000  # messages read per list when looking for a job's place


@dataclass
class Worker:
    name: str
    queues: list[str] = field(default_factory=list)
    active: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Beat:
    seconds_since_tick: float | None

    @property
    def is_alive(self) -> bool:
        return self.seconds_since_tick is not None and self.seconds_since_tick < BEAT_STALE_AFTER


def jobs_per_status() -> dict[str, int]:
    from predictions.models import PredictionJob, Status

    counts = dict.fromkeys(Status.values, 0)
    for row in PredictionJob.objects.order_by().values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return counts


def queue_depths() -> dict[str, int] | None:
    """Messages waiting per queue; None when Redis does not answer."""
    try:
        return {queue: broker.queue_depth(queue) for queue in QUEUES}
    except broker.UNAVAILABLE:
        return None


def workers(timeout: float = INSPECT_TIMEOUT) -> list[Worker]:
    """Workers that answer within the timeout, with their queues and running tasks."""
    inspect = celery_app.control.inspect(timeout=timeout)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:  # both broadcasts wait in parallel
            queues_call = pool.submit(inspect.active_queues)
            active_call = pool.submit(inspect.active)
            queues, active = queues_call.result() or {}, active_call.result() or {}
    except Exception:  # the broker is down or a reply is malformed: show no workers
        logger.warning("dashboard: could not inspect workers", exc_info=True)
        return []
    found = []
    for name in sorted(set(queues) | set(active)):
        names = sorted(queue["name"] for queue in queues.get(name, []))
        found.append(Worker(name, names, [_task_summary(task) for task in active.get(name, [])]))
    return found


def _task_summary(task: dict[str, Any]) -> dict[str, Any]:
    args = task.get("args") or []
    return {
        "id": task.get("id", ""),
        "name": task.get("name", ""),
        "argument": str(args[0]) if args and not isinstance(args[0], list | dict) else "",
        "started": _when(task.get("time_start")),
    }


def _when(timestamp: float | None) -> datetime | None:
    if not timestamp:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.get_current_timezone())


def beat() -> Beat:
    try:
        value = broker.client().get(HEARTBEAT_KEY)
    except broker.UNAVAILABLE:
        return Beat(None)
    return Beat(time.time() - float(value) if value else None)


def next_beat_runs(now: datetime | None = None, count: int = 8) -> list[dict[str, Any]]:
    """Enabled periodic tasks by when they are next due (interval and crontab schedules)."""
    now = now or timezone.now()
    runs = []
    tasks = PeriodicTask.objects.filter(enabled=True).select_related("interval", "crontab")
    for task in tasks:
        if task.one_off and task.total_run_count:
            continue
        try:
            due_in = task.schedule.remaining_estimate(_in_zone_of(task, task.last_run_at or now))
        except Exception:  # solar/clocked or a bad schedule: list it without a time
            logger.debug("no estimate for %s", task.name, exc_info=True)
            due_in = None
        due = _to_the_second(now + max(due_in, timedelta(0))) if due_in is not None else None
        runs.append({"name": task.name, "task": task.task, "due": due, "last": task.last_run_at})
    runs.sort(key=lambda run: (run["due"] is None, run["due"] or now))
    return runs[:count]


def _in_zone_of(task: PeriodicTask, at: datetime) -> datetime:
    """`at` in the zone of the task's crontab, as beat's is_due reads it: given in UTC, a
    crontab of 02:00 Europe/Paris was shown due at 02:00 UTC."""
    zone = getattr(task.schedule, "tz", None)  # a crontab's; intervals have none
    return at.astimezone(zone) if zone is not None else at


def _to_the_second(at: datetime) -> datetime:
    # The estimate counts from the schedule's own clock, read a moment after `now`: without
    # rounding, a crontab due at 02:00:00 was shown due at 01:59:59.
    return (at + timedelta(microseconds=500_000)).replace(microsecond=0)


def last_hour(now: datetime | None = None) -> list[dict[str, Any]]:
    """Per minute of the last hour: jobs finished and their mean latency (s)."""
    from predictions.models import FINISHED, PredictionJob

    now = now or timezone.now()
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    latency = ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())
    rows = (
        PredictionJob.objects.filter(status__in=FINISHED, finished_at__gte=start)
        .annotate(minute=TruncMinute("finished_at"))
        .order_by()
        .values("minute")
        .annotate(finished=Count("pk"), latency=Avg(latency))
    )
    by_minute = {row["minute"]: row for row in rows}  # aware datetimes: zones compare equal
    minutes = []
    for step in range(60):
        minute = start + timedelta(minutes=step)
        row = by_minute.get(minute)
        mean = row["latency"] if row else None
        minutes.append(
            {
                "minute": minute,
                "finished": row["finished"] if row else 0,
                "latency": mean.total_seconds() if isinstance(mean, timedelta) else mean,
            }
        )
    return minutes


def queue_of(kind: str) -> str:
    task = {"single": "predictions.tasks.score_single_jobs"}.get(
        kind, "predictions.tasks.run_batch_job"
    )
    return settings.CELERY_TASK_ROUTES.get(task, {}).get("queue", "default")


def position_in_queue(queue: str, task_id: str) -> int | None:
    """How many messages a worker takes before this task's; None when it is not waiting.

    kombu pops a queue's lists in priority order ("predict" first, then "predict…3", …)
    and each list from its right end, so what is ahead is everything in the lists popped
    before, plus what sits to the right of it in its own list.
    """
    ahead = 0
    for key in broker.queue_keys(queue):
        messages = broker.client().lrange(key, -POSITION_SCAN_LIMIT, -1)
        for index, raw in enumerate(reversed(messages)):
            if _task_id_of(raw) == task_id:
                return ahead + index
        ahead += broker.client().llen(key)
    return None


def _task_id_of(raw: bytes | str) -> str | None:
    try:
        return json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def why_queued(job: Any) -> dict[str, Any]:
    """Everything that explains why a queued job has not started yet."""
    queue = queue_of(job.kind)
    try:
        depth = broker.queue_depth(queue)
        position = position_in_queue(queue, job.task_id) if job.task_id else None
        redis_ok = True
    except broker.UNAVAILABLE:
        depth, position, redis_ok = None, None, False
    consuming = [worker for worker in workers() if queue in worker.queues]
    waited = (timezone.now() - (job.enqueued_at or job.created_at)).total_seconds()
    return {
        "queue": queue,
        "depth": depth,
        "position": position,
        "redis_ok": redis_ok,
        "workers": consuming,
        "busy": sum(len(worker.active) for worker in consuming),
        "beat": beat(),
        "waited": waited,
        "resend_after": settings.RECONCILE_QUEUED_AFTER,
    }
