"""The admin dashboard, the live progress endpoint and the "why still queued?" panel."""

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from mlsite import broker, charts, dashboard
from mlsite.scheduler import HEARTBEAT_KEY
from predictions.models import Kind, PredictionJob, Status
from tests.base import make_user
from tests.builders import make_version
from tests.processes import RedisServer


@pytest.fixture
def own_redis(private_redis: RedisServer, settings) -> Iterator[RedisServer]:
    settings.REDIS_URL = private_redis.url
    broker.client.cache_clear()
    yield private_redis
    broker.client.cache_clear()


@pytest.fixture
def as_staff(db) -> Client:
    client = Client()
    client.force_login(make_user("boss", staff=True, is_superuser=True))
    return client


def make_job(status: str = Status.QUEUED, kind: str = Kind.BATCH, **fields) -> PredictionJob:
    earlier = PredictionJob.objects.first()
    version = earlier.version if earlier else make_version()
    return PredictionJob.objects.create(
        owner=make_user(f"u{uuid.uuid4().hex[:6]}"),
        version=version,
        model_ref="iris",
        artifact_sha256=version.sha256,
        kind=kind,
        status=status,
        task_id=str(uuid.uuid4()),
        **fields,
    )


def test_the_dashboard_shows_jobs_queues_workers_beat_and_the_last_hour(
    as_staff: Client, live_worker
) -> None:
    make_job(Status.QUEUED)
    done = make_job(Status.SUCCEEDED, kind=Kind.SINGLE)
    PredictionJob.objects.filter(pk=done.pk).update(
        finished_at=timezone.now(), created_at=timezone.now() - timedelta(seconds=2)
    )
    running = make_job(Status.RUNNING, rows_total=200, rows_done=50)
    broker.client().set(HEARTBEAT_KEY, time.time(), ex=60)
    every_hour = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.create(
        name="purge-expired-results",
        task="mlsite.tasks.purge_expired_results",
        interval=every_hour,
        last_run_at=timezone.now() - timedelta(minutes=15),
    )

    try:
        page = as_staff.get("/admin/dashboard/")
    finally:
        broker.client().delete(HEARTBEAT_KEY)  # the shared Redis: other tests expect no beat

    assert page.status_code == 200
    html = page.content.decode()
    assert page.context["jobs"]["queued"] == 1 and page.context["jobs"]["succeeded"] == 1
    assert set(page.context["depths"]) == {"predict", "batch", "training", "default"}
    assert any(worker.name.startswith("test-") for worker in page.context["workers"])
    assert "alive" in html
    [run] = page.context["next_runs"]
    assert run["name"] == "purge-expired-results"
    due_in = (run["due"] - timezone.now()).total_seconds()
    assert 44 * 60 < due_in < 46 * 60  # an hourly task that ran 15 minutes ago
    assert "purge-expired-results" in html
    assert "<svg" in html and "1 finished" in html
    assert f'data-job="{running.pk}"' in html and "25%" in html


def test_a_crontab_in_another_zone_is_due_at_its_own_hour(db) -> None:
    paris = ZoneInfo("Europe/Paris")
    nightly = CrontabSchedule.objects.create(minute="0", hour="2", timezone=paris)
    PeriodicTask.objects.create(
        name="Retrain iris", task="modelregistry.tasks.retrain", crontab=nightly
    )
    now = timezone.now()
    today = datetime.combine(now.astimezone(paris).date(), datetime.min.time(), paris)
    two_oclock = today.replace(hour=2)
    expected = two_oclock if two_oclock > now else (today + timedelta(days=1)).replace(hour=2)

    [run] = dashboard.next_beat_runs(now=now)

    # Read as UTC, it was due an hour late, and a second early (01:59:59 for 02:00).
    assert run["due"] == expected.astimezone(UTC)


def test_the_dashboard_says_so_when_beat_is_not_ticking(as_staff: Client, own_redis) -> None:
    html = as_staff.get("/admin/dashboard/").content.decode()
    assert "not ticking" in html


def test_only_staff_see_the_dashboard(db) -> None:
    client = Client()
    client.force_login(make_user("plain"))
    assert client.get("/admin/dashboard/").status_code == 302  # to the admin login
    assert client.get("/admin/dashboard/progress.json").status_code == 302


def test_the_admin_home_links_to_the_dashboard(as_staff: Client) -> None:
    assert b'href="/admin/dashboard/"' in as_staff.get("/admin/").content


def test_progress_json_reports_each_asked_job(as_staff: Client) -> None:
    job = make_job(Status.RUNNING, rows_total=400, rows_done=100)
    answer = as_staff.get(f"/admin/dashboard/progress.json?ids={job.pk},not-a-uuid").json()
    assert answer["jobs"] == {
        str(job.pk): {
            "status": "running",
            "rows_done": 100,
            "rows_total": 400,
            "percent": 25,
            "finished": False,
            "label": "Running",  # for the status beside the bar on the job list
            "colour": "#2a6ebb",
        }
    }


def test_a_job_page_loads_the_live_progress_script(as_staff: Client) -> None:
    job = make_job(Status.RUNNING, rows_total=10, rows_done=3)
    html = as_staff.get(f"/admin/predictions/predictionjob/{job.pk}/change/").content.decode()
    assert "mlsite/progress" in html and 'data-reload-on-finish="1"' in html
    assert f'data-job="{job.pk}"' in html


@pytest.mark.django_db
def test_a_queued_job_page_explains_its_place_in_line(as_staff: Client, own_redis) -> None:
    job = make_job(Status.QUEUED, enqueued_at=timezone.now())
    sender = Celery(broker=own_redis.url, set_as_current=False)
    for _ in range(2):  # two messages ahead of it
        sender.send_task("predictions.tasks.run_batch_job", args=["x"], queue="batch")
    sender.send_task(
        "predictions.tasks.run_batch_job", args=[str(job.pk)], queue="batch", task_id=job.task_id
    )
    sender.send_task("predictions.tasks.run_batch_job", args=["y"], queue="batch")  # behind

    html = as_staff.get(f"/admin/predictions/predictionjob/{job.pk}/change/").content.decode()

    assert "Why is this job still queued?" in html
    assert "4 messages waiting" in html
    assert "number <strong>3</strong> in line" in html
    assert "not ticking" in html  # this test's Redis has no beat heartbeat


@pytest.mark.django_db
def test_a_higher_priority_list_is_ahead_in_line(own_redis) -> None:
    sender = Celery(broker=own_redis.url, set_as_current=False)
    sender.send_task("mlsite.tasks.ping", args=["a"], queue="predict", priority=0)
    sender.send_task("mlsite.tasks.ping", args=["b"], queue="predict", priority=6, task_id="late")
    assert dashboard.position_in_queue("predict", "late") == 1
    assert dashboard.position_in_queue("predict", "absent") is None


def test_a_running_job_page_has_no_queued_panel(as_staff: Client) -> None:
    job = make_job(Status.RUNNING)
    html = as_staff.get(f"/admin/predictions/predictionjob/{job.pk}/change/").content.decode()
    assert "Why is this job still queued?" not in html


def test_the_chart_draws_one_bar_per_busy_minute() -> None:
    now = timezone.now()
    minutes = [
        {"minute": now, "finished": count, "latency": 0.5 if count else None}
        for count in (0, 3, 0, 5)
    ]
    svg = charts.throughput_chart(minutes)
    assert svg.count("<rect") == 2
    assert "<polyline" in svg and "5 finished" in svg
