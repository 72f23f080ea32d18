"""Prometheus metrics at /metrics, computed at scrape time from the database and Redis.

Job counters and the latency histogram are read from the job rows (retention keeps every
row's summary, so the counts only grow), queue depths from the broker's Redis lists and
model load times from a Redis hash that every worker process adds to. None of it lives in
one process's memory, so any web process answers the same numbers for the whole fleet.
"""

import hmac
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast

import redis
from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from . import broker
from .scheduler import HEARTBEAT_KEY

logger = logging.getLogger(__name__)

QUEUES = ("predict", "batch", "training", "default")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
MODEL_LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MODEL_LOAD_KEY = "mlsite:metrics:model_load_seconds"
LATENCY_KEY = "mlsite:metrics:job_latency_seconds"
LATENCY_LOCK_KEY = "mlsite:metrics:job_latency_seconds:lock"
SETTLE_SECONDS = 60


def advance_latency(now: float | None = None) -> dict[str, float]:
    """Adds the jobs that succeeded since the last scrape to the latency histogram in Redis.

    A finished job never changes, so each is counted once, by whichever web process
    scrapes first (a Redis lock), and a scrape reads only the jobs new since the last: the
    cost stays flat however large the table grows. A job counts SETTLE_SECONDS after it
    finished, when the transaction that wrote its finished_at has surely committed.
    Returns the histogram's fields ("single|le:0.5", "single|count", "single|sum", …).
    """
    client = broker.client()
    lock = client.lock(LATENCY_LOCK_KEY, timeout=60, blocking_timeout=0)
    if lock.acquire(blocking=False):
        try:
            _count_new_latencies(client, (now or time.time()) - SETTLE_SECONDS)
        finally:
            lock.release()
    # The client does not decode responses: keys are bytes.
    latencies = client.hgetall(LATENCY_KEY).items()
    return {cast(bytes, key).decode(): float(value) for key, value in latencies}


def _count_new_latencies(client: redis.Redis, until: float) -> None:
    from predictions.models import PredictionJob, Status

    since = float(client.hget(LATENCY_KEY, "watermark") or 0)
    if until <= since:
        return
    window = PredictionJob.objects.filter(
        status=Status.SUCCEEDED,
        finished_at__gte=datetime.fromtimestamp(since, UTC),
        finished_at__lt=datetime.fromtimestamp(until, UTC),
    )
    increments: dict[str, int] = {}
    sums: dict[str, float] = {}
    for kind, created, finished in window.values_list("kind", "created_at", "finished_at"):
        # finished_at__gte above leaves out jobs without a finish time.
        seconds = max((cast(datetime, finished) - created).total_seconds(), 0.0)
        for bound in [b for b in LATENCY_BUCKETS if seconds <= b]:
            increments[f"{kind}|le:{bound}"] = increments.get(f"{kind}|le:{bound}", 0) + 1
        increments[f"{kind}|count"] = increments.get(f"{kind}|count", 0) + 1
        sums[f"{kind}|sum"] = sums.get(f"{kind}|sum", 0.0) + seconds
    with client.pipeline(transaction=True) as pipe:  # the counts and the watermark together
        for name, count in increments.items():
            pipe.hincrby(LATENCY_KEY, name, count)
        for name, total in sums.items():
            pipe.hincrbyfloat(LATENCY_KEY, name, total)
        pipe.hset(LATENCY_KEY, "watermark", until)
        pipe.execute()


def record_model_load(seconds: float) -> None:
    """Adds one model load to the shared histogram; a Redis outage only loses the sample."""
    with_buckets = [f"le:{bound}" for bound in MODEL_LOAD_BUCKETS if seconds <= bound]
    try:
        with broker.client().pipeline(transaction=False) as pipe:
            for field in [*with_buckets, "count"]:
                pipe.hincrby(MODEL_LOAD_KEY, field, 1)
            pipe.hincrbyfloat(MODEL_LOAD_KEY, "sum", seconds)
            pipe.execute()
    except broker.UNAVAILABLE:
        logger.warning("model load time not recorded: Redis unavailable")


class QueueCollector(Collector):
    """Everything the queue's operators graph, read fresh on every scrape."""

    def collect(self) -> Iterator:
        yield from self._jobs()
        latency = self._latency()
        if latency is not None:
            yield latency
        yield from self._redis_metrics()

    def _jobs(self) -> Iterator:
        from predictions.models import FINISHED, PredictionJob, Status

        rows = PredictionJob.objects.values("kind", "status").annotate(n=Count("pk"))
        submitted = CounterMetricFamily(
            "mlsite_jobs_submitted", "Prediction jobs submitted.", labels=["kind"]
        )
        finished = CounterMetricFamily(
            "mlsite_jobs_finished", "Prediction jobs finished, by outcome.", labels=["status"]
        )
        current = GaugeMetricFamily(
            "mlsite_jobs", "Prediction jobs now queued or running.", labels=["status"]
        )
        by_kind: dict[str, int] = {}
        by_status: dict[str, int] = {status: 0 for status in Status.values}
        for row in rows:
            by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + row["n"]
            by_status[row["status"]] += row["n"]
        for kind, count in sorted(by_kind.items()):
            submitted.add_metric([kind], count)
        for status, count in by_status.items():
            family = finished if status in FINISHED else current
            family.add_metric([status], count)
        return iter((submitted, finished, current))

    def _latency(self) -> HistogramMetricFamily | None:
        try:
            fields = advance_latency()
        except broker.UNAVAILABLE:
            logger.warning("metrics: Redis unavailable; job latency left out")
            return None
        histogram = HistogramMetricFamily(
            "mlsite_job_latency_seconds",
            f"Submission to result of succeeded jobs (created → finished), counted "
            f"{SETTLE_SECONDS} s after they finish.",
            labels=["kind"],
        )
        for kind in sorted({name.split("|")[0] for name in fields if "|" in name}):
            buckets = [
                (str(float(bound)), fields.get(f"{kind}|le:{bound}", 0.0))
                for bound in LATENCY_BUCKETS
            ]
            buckets.append(("+Inf", fields.get(f"{kind}|count", 0.0)))
            histogram.add_metric([kind], buckets, fields.get(f"{kind}|sum", 0.0))
        return histogram

    def _redis_metrics(self) -> Iterator:
        depth = GaugeMetricFamily(
            "mlsite_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        try:
            for queue in QUEUES:
                depth.add_metric([queue], broker.queue_depth(queue))
            loads = broker.client().hgetall(MODEL_LOAD_KEY)
            heartbeat = broker.client().get(HEARTBEAT_KEY)
        except broker.UNAVAILABLE:
            logger.warning("metrics: Redis unavailable; queue depths and load times left out")
            return
        yield depth
        yield _model_load_histogram({cast(bytes, k).decode(): float(v) for k, v in loads.items()})
        beat = GaugeMetricFamily(
            "mlsite_beat_seconds_since_tick",
            "Seconds since celery beat last ticked (absent: no tick in the last minute).",
        )
        if heartbeat:
            beat.add_metric([], time.time() - float(heartbeat))
            yield beat


def _model_load_histogram(fields: dict[str, float]) -> HistogramMetricFamily:
    buckets = [(str(float(bound)), fields.get(f"le:{bound}", 0.0)) for bound in MODEL_LOAD_BUCKETS]
    buckets.append(("+Inf", fields.get("count", 0.0)))
    return HistogramMetricFamily(
        "mlsite_model_load_seconds",
        "Time a worker took to verify and unpickle a model version (cache misses only).",
        buckets=buckets,
        sum_value=fields.get("sum", 0.0),
    )


registry = CollectorRegistry(auto_describe=False)
registry.register(QueueCollector())


def has_monitoring_token(request: HttpRequest) -> bool:
    """Whether the request may read monitoring details: METRICS_TOKEN is not set, or the
    request carries it as `Authorization: Bearer <token>`."""
    token = settings.METRICS_TOKEN
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return not token or hmac.compare_digest(offered.encode(), token.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition; with METRICS_TOKEN set, only for `Bearer <token>`."""
    if not has_monitoring_token(request):
        return HttpResponse("metrics need the METRICS_TOKEN bearer token\n", status=401)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
