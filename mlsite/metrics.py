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
from datetime import timedelta

import redis
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
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


def record_model_load(seconds: float) -> None:
    """Adds one model load to the shared histogram; a Redis outage only loses the sample."""
    with_buckets = [f"le:{bound}" for bound in MODEL_LOAD_BUCKETS if seconds <= bound]
    try:
        with broker.client().pipeline(transaction=False) as pipe:
            for field in [*with_buckets, "count"]:
                pipe.hincrby(MODEL_LOAD_KEY, field, 1)
            pipe.hincrbyfloat(MODEL_LOAD_KEY, "sum", seconds)
            pipe.execute()
    except redis.RedisError:
        logger.warning("model load time not recorded: Redis unavailable")


class QueueCollector(Collector):
    """Everything the queue's operators graph, read fresh on every scrape."""

    def collect(self) -> Iterator:
        yield from self._jobs()
        yield self._latency()
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

    def _latency(self) -> HistogramMetricFamily:
        from predictions.models import PredictionJob, Status

        succeeded = PredictionJob.objects.filter(status=Status.SUCCEEDED, finished_at__isnull=False)
        duration = ExpressionWrapper(
            F("finished_at") - F("created_at"), output_field=DurationField()
        )
        counts = {
            f"le_{index}": Count(
                "pk", filter=Q(finished_at__lte=F("created_at") + timedelta(seconds=bound))
            )
            for index, bound in enumerate(LATENCY_BUCKETS)
        }
        histogram = HistogramMetricFamily(
            "mlsite_job_latency_seconds",
            "Submission to result of succeeded jobs (created → finished).",
            labels=["kind"],
        )
        for row in succeeded.values("kind").annotate(n=Count("pk"), total=Sum(duration), **counts):
            buckets = [(str(float(b)), row[f"le_{i}"]) for i, b in enumerate(LATENCY_BUCKETS)]
            buckets.append(("+Inf", row["n"]))
            total = row["total"].total_seconds() if row["total"] else 0.0
            histogram.add_metric([row["kind"]], buckets, total)
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
        except redis.RedisError:
            logger.warning("metrics: Redis unavailable; queue depths and load times left out")
            return
        yield depth
        yield _model_load_histogram({k.decode(): float(v) for k, v in loads.items()})
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


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition; with METRICS_TOKEN set, only for `Bearer <token>`."""
    token = settings.METRICS_TOKEN
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if token and not hmac.compare_digest(offered.encode(), token.encode()):
        return HttpResponse("metrics need the METRICS_TOKEN bearer token\n", status=401)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
