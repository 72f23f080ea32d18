"""/metrics: job counters, latency, queue depth and model load time, in Prometheus format."""

import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import Celery
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mlsite import broker, metrics
from modelregistry import loader
from predictions.models import Kind, PredictionJob, Status
from tests.base import make_user
from tests.builders import make_version
from tests.processes import RedisServer


@pytest.fixture
def own_redis(private_redis: RedisServer, settings) -> Iterator[RedisServer]:
    """Points the project's Redis client at this test's own Redis."""
    settings.REDIS_URL = private_redis.url
    broker.client.cache_clear()
    yield private_redis
    broker.client.cache_clear()


def scrape(**headers: str) -> dict[str, dict[tuple, float]]:
    response = Client().get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def make_job(
    status: str, seconds: float = 0, kind: str = Kind.SINGLE, minutes_ago: float = 10
) -> PredictionJob:
    version = (
        make_version()
        if not PredictionJob.objects.exists()
        else PredictionJob.objects.first().version
    )
    job = PredictionJob.objects.create(
        owner=make_user(f"user{PredictionJob.objects.count()}"),
        version=version,
        model_ref="iris",
        artifact_sha256=version.sha256,
        kind=kind,
        status=status,
    )
    if status in (Status.SUCCEEDED, Status.FAILED):
        created = timezone.now() - timedelta(minutes=minutes_ago)
        PredictionJob.objects.filter(pk=job.pk).update(
            created_at=created, finished_at=created + timedelta(seconds=seconds)
        )
    return job


@pytest.mark.django_db
def test_job_counters_count_submitted_and_finished_jobs_by_status(own_redis) -> None:
    make_job(Status.QUEUED)
    make_job(Status.SUCCEEDED, 0.2)
    make_job(Status.SUCCEEDED, 40, kind=Kind.BATCH)
    make_job(Status.FAILED, 1)
    samples = scrape()
    assert samples["mlsite_jobs_submitted_total"] == {
        (("kind", "batch"),): 1,
        (("kind", "single"),): 3,
    }
    finished = samples["mlsite_jobs_finished_total"]
    assert finished[(("status", "succeeded"),)] == 2
    assert finished[(("status", "failed"),)] == 1
    assert finished[(("status", "cancelled"),)] == 0
    assert samples["mlsite_jobs"][(("status", "queued"),)] == 1


@pytest.mark.django_db
def test_the_latency_histogram_puts_each_succeeded_job_in_its_bucket(own_redis) -> None:
    make_job(Status.SUCCEEDED, 0.2)
    make_job(Status.SUCCEEDED, 3)
    make_job(Status.FAILED, 0.1)  # only successes count towards latency
    buckets = scrape()["mlsite_job_latency_seconds_bucket"]
    assert buckets[(("kind", "single"), ("le", "0.1"))] == 0
    assert buckets[(("kind", "single"), ("le", "0.25"))] == 1
    assert buckets[(("kind", "single"), ("le", "5.0"))] == 2
    assert buckets[(("kind", "single"), ("le", "+Inf"))] == 2
    total = scrape()["mlsite_job_latency_seconds_sum"][(("kind", "single"),)]
    assert total == pytest.approx(3.2, abs=0.01)  # the second scrape counted nothing twice


@pytest.mark.django_db
def test_a_job_counts_towards_latency_once_it_has_settled(own_redis) -> None:
    make_job(Status.SUCCEEDED, 0.5, minutes_ago=0)
    now = time.time()
    assert metrics.advance_latency(now=now).get("single|count", 0) == 0
    assert metrics.advance_latency(now=now + metrics.SETTLE_SECONDS + 5)["single|count"] == 1
    assert metrics.advance_latency(now=now + metrics.SETTLE_SECONDS + 9)["single|count"] == 1


@pytest.mark.django_db
def test_queue_depth_counts_waiting_messages_of_every_priority(own_redis) -> None:
    sender = Celery(broker=own_redis.url, set_as_current=False)
    for priority in (0, 0, 9):  # kombu puts priority 9 in a list of its own
        sender.send_task("mlsite.tasks.ping", args=["x"], queue="batch", priority=priority)
    sender.send_task("mlsite.tasks.ping", args=["x"], queue="training")
    depth = scrape()["mlsite_queue_depth"]
    assert depth[(("queue", "batch"),)] == 3
    assert depth[(("queue", "training"),)] == 1
    assert depth[(("queue", "predict"),)] == 0


@pytest.mark.django_db
def test_each_model_load_is_recorded_in_the_load_time_histogram(own_redis) -> None:
    version = make_version()
    loader.clear_cache()
    loader.load(version)
    loader.load(version)  # served from the cache: not a load
    samples = scrape()
    assert samples["mlsite_model_load_seconds_count"][()] == 1
    assert samples["mlsite_model_load_seconds_bucket"][(("le", "+Inf"),)] == 1
    assert 0 < samples["mlsite_model_load_seconds_sum"][()] < 30


@pytest.mark.django_db
def test_metrics_ask_for_the_token_when_one_is_configured(own_redis, settings) -> None:
    settings.METRICS_TOKEN = "s3cret"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert "mlsite_queue_depth" in scrape(HTTP_AUTHORIZATION="Bearer s3cret")


@pytest.mark.django_db
def test_a_model_loads_while_redis_hangs(own_redis, settings) -> None:
    """A Redis that takes connections but answers nothing (here: paused) costs the load-time
    sample, not the load. (In CI, redis-py's retry after such a timeout once raised ValueError
    instead of a RedisError; broker.UNAVAILABLE covers both.)"""
    settings.REDIS_SOCKET_TIMEOUT = 0.3
    broker.client.cache_clear()
    version = make_version()
    loader.clear_cache()
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        estimator = loader.load(version)
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert len(estimator.predict([[5.1, 3.5, 1.4, 0.2]])) == 1
