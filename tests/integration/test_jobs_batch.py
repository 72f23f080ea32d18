"""Batch jobs through the REST API and a real worker: chunks in parallel, one merged file."""

import io
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from predictions import reconcile
from predictions.models import BatchChunk, ChunkStatus, PredictionJob, Status
from tests import processes
from tests.base import make_user
from tests.builders import IRIS_FEATURES, in_process_predictions, iris_rows, make_version
from tests.processes import wait_for

# Submits a file and runs its batch task in a process whose Redis is away: the submission is
# kept for the reconciler to send, and the task plans the job and cannot send its chunks.
RUN_WITHOUT_REDIS = """
import os
import sys
import django
django.setup()
from django.contrib.auth.models import User
from predictions import submission
from predictions.tasks import run_batch_job
path, user_id = sys.argv[1:]
with open(path, "rb") as upload:
    job, _ = submission.submit_file(
        User.objects.get(pk=user_id), "iris", upload, size=os.path.getsize(path)
    )
run_batch_job.apply(args=[str(job.pk)], task_id=job.task_id)
print(job.pk)
"""


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def csv_upload(rows: list[dict], name: str = "rows.csv", **columns: list) -> io.BytesIO:
    frame = pd.DataFrame(rows)
    for column, values in columns.items():
        frame.insert(0, column, values)
    upload = io.BytesIO(frame.to_csv(index=False).encode())
    upload.name = name
    return upload


def finished(job_id: str, timeout: float = 60) -> PredictionJob:
    wait_for(lambda: PredictionJob.objects.get(pk=job_id).is_finished, timeout, "batch job")
    return PredictionJob.objects.get(pk=job_id)


@pytest.mark.django_db(transaction=True)
def test_a_batch_file_is_scored_in_chunks_into_the_predictions_of_the_model(live_worker) -> None:
    version = make_version()
    rows = iris_rows(1000)
    ids = [f"row-{i}" for i in range(1000)]
    ids[3] = "=HYPERLINK(1)"
    client = client_for(make_user())

    answer = client.post(
        "/api/v1/jobs/?wait=30",
        {"model": "iris", "file": csv_upload(rows, key=ids), "id_column": "key"},
        format="multipart",
    )

    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["status"] == "succeeded"
    assert body["kind"] == "batch"
    assert body["rows_total"] == body["rows_done"] == 1000
    assert BatchChunk.objects.filter(job_id=body["id"], status=ChunkStatus.DONE).count() == 5
    download = client.get(f"/api/v1/jobs/{body['id']}/result/?format=csv")
    assert download.status_code == 200
    result = pd.read_csv(io.BytesIO(b"".join(download.streaming_content)))
    assert list(result.columns) == ["key", "prediction", *[f"probability_{c}" for c in range(3)]]
    assert result["prediction"].tolist() == in_process_predictions(version, rows).tolist()
    assert result["key"][3] == "'=HYPERLINK(1)"  # spreadsheet-safe
    assert result["key"][999] == "row-999"


@pytest.mark.django_db(transaction=True)
def test_rows_that_cannot_be_scored_go_to_the_error_file_and_the_rest_succeed(live_worker) -> None:
    make_version()
    text = ",".join(IRIS_FEATURES) + "\n1,2,3,4\n5,x,7,8\n1,2,,4\n1.5,2.5,3.5,4.5\n"
    upload = io.BytesIO(text.encode())
    upload.name = "bad.csv"
    client = client_for(make_user())

    answer = client.post("/api/v1/jobs/?wait=30", {"model": "iris", "file": upload})

    body = answer.json()
    assert body["status"] == "succeeded", body
    assert body["rows_failed"] == 2
    result = client.get(f"/api/v1/jobs/{body['id']}/result/?format=json").json()
    assert len(result) == 2
    errors = client.get(body["error_file_url"])
    content = b"".join(errors.streaming_content).decode()
    assert "\r" not in content  # one line end throughout, as in the result file
    lines = content.splitlines()
    assert lines[0] == "row,id,error"
    assert lines[1].startswith("2,,sepal_width is not a number")
    assert lines[2].startswith("3,,petal_length is empty")


@pytest.mark.django_db(transaction=True)
def test_a_batch_cancelled_while_it_runs_stops_between_chunks(live_worker) -> None:
    make_version()
    client = client_for(make_user())
    created = client.post(
        "/api/v1/jobs/", {"model": "iris", "file": csv_upload(iris_rows(60_000))}
    ).json()
    wait_for(lambda: PredictionJob.objects.get(pk=created["id"]).rows_done > 0, 60, "progress")

    cancelled = client.post(f"/api/v1/jobs/{created['id']}/cancel/")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    def chunks_settled() -> bool:
        return not BatchChunk.objects.filter(job_id=created["id"], status=ChunkStatus.RUNNING)

    wait_for(chunks_settled, 20, "running chunks to finish")
    job = PredictionJob.objects.get(pk=created["id"])
    assert job.status == Status.CANCELLED
    assert not job.result_file
    assert 0 < job.rows_done < 60_000
    assert BatchChunk.objects.filter(job=job, status=ChunkStatus.PENDING).exists()


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_batch_retried_runs_again_to_success(live_worker) -> None:
    version = make_version()
    client = client_for(make_user())
    rows = iris_rows(600)
    created = client.post("/api/v1/jobs/", {"model": "iris", "file": csv_upload(rows)}).json()
    client.post(f"/api/v1/jobs/{created['id']}/cancel/")
    finished(created["id"])

    retried = client.post(f"/api/v1/jobs/{created['id']}/retry/")

    assert retried.status_code == 200
    assert retried.json()["status"] == "queued"
    job = finished(created["id"])
    assert job.status == Status.SUCCEEDED
    assert job.rows_done == 600
    parquet = client.get(f"/api/v1/jobs/{job.pk}/result/?format=parquet")
    assert parquet["Content-Type"] == "application/vnd.apache.parquet"
    result = pd.read_parquet(io.BytesIO(parquet.content))
    assert result["prediction"].tolist() == in_process_predictions(version, rows).tolist()


@pytest.mark.django_db(transaction=True)
def test_a_parquet_upload_is_scored_like_a_csv(live_worker) -> None:
    version = make_version()
    rows = iris_rows(300)
    upload = io.BytesIO()
    pd.DataFrame(rows).to_parquet(upload)
    upload.seek(0)
    upload.name = "rows.parquet"
    client = client_for(make_user())

    body = client.post("/api/v1/jobs/?wait=30", {"model": "iris", "file": upload}).json()

    assert body["status"] == "succeeded", body
    result = client.get(f"/api/v1/jobs/{body['id']}/result/?format=json").json()
    assert [row["prediction"] for row in result] == in_process_predictions(version, rows).tolist()


@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_chunks_could_not_be_sent_runs_again_a_minute_later(
    live_worker, tmp_path: Path
) -> None:
    version = make_version()
    rows = iris_rows(500)
    path = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    nowhere = f"redis://127.0.0.1:{processes.free_port()}/0"
    env = processes.process_env(nowhere, BATCH_CHUNK_ROWS="200")
    run = processes.run_python(["-c", RUN_WITHOUT_REDIS, str(path), str(make_user().pk)], env)
    assert run.returncode == 0, run.stderr
    job = PredictionJob.objects.get(pk=run.stdout.split()[-1])
    # Not failed for a Redis that was away: planned, running, and no attempt spent.
    assert (job.status, job.attempts, job.error_code) == (Status.RUNNING, 0, "")
    assert job.chunks.filter(status=ChunkStatus.PENDING).count() == 3
    # Its lease ends as soon as a queued job would be resent, not after a task's time limit.
    assert job.lease_expires_at is not None
    assert job.lease_expires_at <= timezone.now() + timedelta(
        seconds=settings.RECONCILE_QUEUED_AFTER
    )

    lease_over = job.lease_expires_at + timedelta(seconds=1)
    assert reconcile.reconcile(now=lease_over).requeued == 1  # sent to the live worker
    job = finished(str(job.pk))

    assert (job.status, job.attempts, job.rows_done) == (Status.SUCCEEDED, 1, 500)
    result = pd.read_csv(job.result_file.path)
    assert result["prediction"].tolist() == in_process_predictions(version, rows).tolist()
