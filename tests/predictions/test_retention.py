"""Result retention: old payloads and files go, the job's summary stays, tables stay bounded."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone
from django_celery_results.models import TaskResult

from mlsite.tasks import purge_expired_results
from predictions import batching, retention, running
from predictions.models import BatchChunk, ChunkStatus, Kind, PredictionJob, Status
from tests.base import make_user
from tests.builders import iris_rows, make_version

NOW = timezone.now()


def finished_job(days_ago: float, status: str = Status.SUCCEEDED, **fields) -> PredictionJob:
    version = make_version() if not PredictionJob.objects.exists() else None
    version = version or PredictionJob.objects.first().version
    job = PredictionJob.objects.create(
        owner=make_user(f"u{PredictionJob.objects.count()}"),
        version=version,
        model_ref="iris",
        artifact_sha256=version.sha256,
        status=status,
        rows_total=3,
        rows_done=3,
        inputs=iris_rows(3),
        outputs=[{"prediction": 0}] * 3,
        **fields,
    )
    finished_at = NOW - timedelta(days=days_ago) if status != Status.RUNNING else None
    PredictionJob.objects.filter(pk=job.pk).update(finished_at=finished_at)
    job.refresh_from_db()
    return job


def stored(name: str, content: bytes = b"a,b\n1,2\n") -> str:
    return default_storage.save(name, ContentFile(content))


@pytest.mark.django_db
def test_an_expired_batch_job_loses_its_payload_and_files_but_keeps_its_summary() -> None:
    job = finished_job(40, kind=Kind.BATCH, error_code="", rows_failed=1)
    job.input_file.name = stored("uploads/in.csv")
    job.result_file.name = stored("results/out.csv")
    job.error_file.name = stored("results/errors.csv")
    job.save()
    BatchChunk.objects.create(job=job, index=0, start_row=0, stop_row=3, status=ChunkStatus.DONE)
    files = [job.input_file.name, job.result_file.name, job.error_file.name]

    report = retention.purge_expired(now=NOW, days=30)

    job.refresh_from_db()
    assert (report.jobs, report.files) == (1, 3)
    assert job.inputs is None and job.outputs is None
    assert not job.input_file and not job.result_file and not job.error_file
    assert not any(default_storage.exists(name) for name in files)
    assert not BatchChunk.objects.filter(job=job).exists()
    assert job.purged_at == NOW
    assert (job.status, job.rows_total, job.rows_done, job.rows_failed) == ("succeeded", 3, 3, 1)
    assert job.finished_at is not None


@pytest.mark.django_db
def test_an_expired_failed_batch_loses_the_parts_its_chunks_left() -> None:
    job = finished_job(40, status=Status.FAILED, kind=Kind.BATCH, error_code="worker_lost")
    parts = batching.work_dir(job.pk) / "parts"
    parts.mkdir(parents=True)
    (parts / "000000.csv").write_text("0,1.0,0.0,0.0\n")

    retention.purge_expired(now=NOW, days=30)

    assert not batching.work_dir(job.pk).exists()


@pytest.mark.django_db
def test_recent_and_unfinished_jobs_keep_their_payload() -> None:
    recent = finished_job(2)
    running = finished_job(40, status=Status.RUNNING)
    assert retention.purge_expired(now=NOW, days=30).jobs == 0
    for job in (recent, running):
        job.refresh_from_db()
        assert job.inputs is not None and job.purged_at is None


@pytest.mark.django_db
def test_failed_and_cancelled_jobs_expire_like_succeeded_ones() -> None:
    finished_job(40, status=Status.FAILED, error_code="bad_input")
    finished_job(40, status=Status.CANCELLED)
    assert retention.purge_expired(now=NOW, days=30).jobs == 2
    assert PredictionJob.objects.get(status=Status.FAILED).error_code == "bad_input"


@pytest.mark.django_db
def test_purging_goes_in_batches_and_a_short_run_leaves_the_rest_for_the_next() -> None:
    for _ in range(5):
        finished_job(40)
    assert retention.purge_expired(now=NOW, days=30, batch_size=2, max_batches=1).jobs == 2
    assert retention.purge_expired(now=NOW, days=30, batch_size=2).jobs == 3
    assert retention.purge_expired(now=NOW, days=30, batch_size=2).jobs == 0
    assert not PredictionJob.objects.filter(purged_at__isnull=True).exists()


@pytest.mark.django_db
def test_zero_retention_days_keeps_everything() -> None:
    finished_job(4000)
    assert retention.purge_expired(now=NOW, days=0).jobs == 0


@pytest.mark.django_db
def test_old_task_results_are_deleted_and_recent_ones_kept() -> None:
    for task_id, days_ago in (("old-1", 31), ("old-2", 60), ("new", 1)):
        TaskResult.objects.create(task_id=task_id, status="SUCCESS")
        TaskResult.objects.filter(task_id=task_id).update(date_done=NOW - timedelta(days=days_ago))
    report = retention.purge_expired(now=NOW, days=30, batch_size=1)
    assert report.task_results == 2
    # Only this test's rows: a worker from an earlier test may have left a result behind.
    mine = TaskResult.objects.filter(task_id__in=["old-1", "old-2", "new"])
    assert list(mine.values_list("task_id", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_purges_in_a_real_worker(live_worker) -> None:
    job = finished_job(45)  # the worker's default retention is 30 days
    counts = purge_expired_results.delay().get(timeout=30)
    job.refresh_from_db()
    assert counts["jobs"] == 1
    assert job.purged_at is not None and job.inputs is None


def test_the_purge_runs_on_the_beat_schedule(settings) -> None:
    entries = settings.CELERY_BEAT_SCHEDULE.values()
    assert any(entry["task"] == "mlsite.tasks.purge_expired_results" for entry in entries)


@pytest.mark.django_db
def test_a_purged_jobs_result_answers_410_gone_and_its_page_says_why() -> None:
    job = finished_job(40)
    retention.purge_expired(now=NOW, days=30)
    client = Client()
    client.force_login(job.owner)
    answer = client.get(f"/api/v1/jobs/{job.pk}/result/?format=csv")
    assert answer.status_code == 410
    assert answer.json()["code"] == "result_purged"
    detail = client.get(f"/api/v1/jobs/{job.pk}/").json()
    assert (detail["status"], detail["rows_done"], detail["outputs"]) == ("succeeded", 3, None)
    client.force_login(make_user("boss", staff=True, is_superuser=True))
    page = client.get(f"/admin/predictions/predictionjob/{job.pk}/change/").content.decode()
    assert "deleted by result retention" in page


def test_uploads_abandoned_by_a_dead_web_process_are_swept_and_fresh_ones_kept(settings) -> None:
    folder = Path(settings.FILE_UPLOAD_TEMP_DIR)
    old, fresh = folder / "tmpold.upload.csv", folder / "tmpfresh.upload.csv"
    old.write_text("x")
    fresh.write_text("x")
    two_days_ago = (timezone.now() - timedelta(days=2)).timestamp()
    os.utime(old, (two_days_ago, two_days_ago))

    report = retention.purge_expired(days=0)  # sweeps even when results are kept forever

    assert (report.abandoned_uploads, old.exists(), fresh.exists()) == (1, False, True)
    fresh.unlink()


@pytest.mark.django_db
def test_a_purged_job_cannot_be_retried_it_has_nothing_left_to_score() -> None:
    job = finished_job(40, status=Status.CANCELLED)
    retention.purge_expired(now=NOW, days=30)
    client = Client()
    client.force_login(job.owner)

    answer = client.post(f"/api/v1/jobs/{job.pk}/retry/")

    assert answer.status_code == 409
    assert answer.json()["code"] == "not_retryable"
    assert "retention deleted its inputs" in answer.json()["detail"]
    assert PredictionJob.objects.get(pk=job.pk).status == Status.CANCELLED


@pytest.mark.django_db
def test_a_job_retried_while_the_purge_runs_keeps_its_inputs() -> None:
    job = finished_job(40, status=Status.FAILED)
    expired = list(retention.expired_jobs(retention.cutoff(NOW, 30)).values_list("pk", flat=True))
    client = Client()
    client.force_login(job.owner)
    assert client.post(f"/api/v1/jobs/{job.pk}/retry/").status_code == 200  # between the two

    retention.purge_jobs(expired, NOW)

    job.refresh_from_db()
    assert (job.status, job.purged_at, job.inputs) == (Status.QUEUED, None, iris_rows(3))


@pytest.mark.django_db
def test_a_purged_failed_jobs_error_file_answers_410_gone_as_its_result_would() -> None:
    job = finished_job(40, status=Status.FAILED, kind=Kind.BATCH, error_code="no_rows_scored")
    PredictionJob.objects.filter(pk=job.pk).update(
        rows_done=0, rows_failed=3, error_file=stored("results/errors.csv")
    )
    client = Client()
    client.force_login(job.owner)
    assert client.get(f"/api/v1/jobs/{job.pk}/errors/").status_code == 200
    retention.purge_expired(now=NOW, days=30)

    answer = client.get(f"/api/v1/jobs/{job.pk}/errors/")

    assert (answer.status_code, answer.json()["code"]) == (410, "result_purged")


@pytest.mark.django_db
def test_the_admin_dates_a_purge_in_the_sites_time_zone(settings) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"
    job = finished_job(40)
    late_evening_utc = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)  # 08:30 on the 2nd in Tokyo
    retention.purge_jobs([job.pk], late_evening_utc)
    client = Client()
    client.force_login(make_user("boss", staff=True, is_superuser=True))

    page = client.get(f"/admin/predictions/predictionjob/{job.pk}/change/").content.decode()

    assert "deleted by result retention on 2026-12-02" in page


@pytest.mark.django_db
def test_a_retry_that_the_purge_overtakes_says_the_inputs_were_deleted(monkeypatch) -> None:
    job = finished_job(40, status=Status.FAILED)
    retry = running.retry

    def purged_first(jobs, **kwargs):  # the purge commits after the view read the job
        retention.purge_expired(now=NOW, days=30)
        return retry(jobs, **kwargs)

    monkeypatch.setattr(running, "retry", purged_first)
    client = Client()
    client.force_login(job.owner)

    answer = client.post(f"/api/v1/jobs/{job.pk}/retry/")

    assert answer.status_code == 409
    assert "retention deleted its inputs" in answer.json()["detail"]  # was "… not failed"
