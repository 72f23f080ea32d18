"""A deleted job takes its files with it: upload, result, error file and batch work folder."""

from pathlib import Path

import pandas as pd
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client, override_settings

from mlsite import sending
from predictions import batching, running, submission
from predictions.models import PredictionJob, Status
from tests.base import make_user
from tests.builders import iris_rows, make_version

pytestmark = pytest.mark.django_db
JOBS = "/admin/predictions/predictionjob/"


@pytest.fixture
def admin_client(monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: None)  # chunks run here
    make_version()
    client = Client()
    client.force_login(make_user("root", staff=True, is_superuser=True))
    return client


def planned_batch(rows: int = 15, bad_rows: int = 0) -> PredictionJob:
    """A batch job of a CSV upload, claimed and cut into chunks (none scored yet)."""
    text = pd.DataFrame(iris_rows(rows)).to_csv(index=False) + "x,1,2,3\n" * bad_rows
    upload = SimpleUploadedFile("rows.csv", text.encode())
    job, _ = submission.submit_file(
        make_user(f"u{rows}-{bad_rows}"), "iris", upload, size=upload.size
    )
    batching.start(job.pk, "t")
    return job


def chunk_ids(job: PredictionJob) -> list[int]:
    return sorted(job.chunks.values_list("pk", flat=True))


def files_of(job: PredictionJob) -> list[Path]:
    job.refresh_from_db()
    stored = [job.input_file, job.result_file, job.error_file]
    return [Path(each.path) for each in stored if each.name] + [batching.work_dir(job.pk)]


@override_settings(BATCH_CHUNK_ROWS=10)
def test_jobs_deleted_from_the_list_leave_none_of_their_files(
    admin_client, django_capture_on_commit_callbacks
) -> None:
    succeeded = planned_batch(bad_rows=1)
    for chunk in chunk_ids(succeeded):
        batching.score_chunk(chunk, "t")
    cancelled = planned_batch(20)
    batching.score_chunk(chunk_ids(cancelled)[0], "t")
    running.cancel(PredictionJob.objects.filter(pk=cancelled.pk))
    single, _ = submission.submit_rows(make_user("single"), "iris", iris_rows(1))
    ours = [succeeded, cancelled]
    files = files_of(succeeded)[:3] + files_of(cancelled)
    assert [path.exists() for path in files] == [True] * 5  # upload, result, errors; upload, work

    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(
            JOBS,
            {
                "action": "delete_selected",
                "_selected_action": [str(job.pk) for job in [*ours, single]],
                "post": "yes",
            },
        )

    assert answer.status_code == 302
    assert not PredictionJob.objects.exists()
    assert [path for path in files if path.exists()] == []


@override_settings(BATCH_CHUNK_ROWS=10)
def test_the_delete_button_removes_a_running_batch_and_its_chunks_then_do_nothing(
    admin_client, django_capture_on_commit_callbacks
) -> None:
    job = planned_batch(25)
    first, *others = chunk_ids(job)
    batching.score_chunk(first, "t")
    files = files_of(job)

    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(f"{JOBS}{job.pk}/delete/", {"post": "yes"})
    outcomes = [batching.score_chunk(chunk, "t") for chunk in others]  # messages in flight

    assert answer.status_code == 302
    assert [path for path in files if path.exists()] == []
    assert [outcome.get("skipped") for outcome in outcomes] == [
        "not pending or job not running"
    ] * 2


def test_a_rolled_back_delete_keeps_the_files(admin_client) -> None:
    job = planned_batch()
    files = files_of(job)
    with pytest.raises(RuntimeError), transaction.atomic():
        PredictionJob.objects.filter(pk=job.pk).delete()
        raise RuntimeError("rolled back")
    assert PredictionJob.objects.filter(pk=job.pk, status=Status.RUNNING).exists()
    assert all(path.exists() for path in files)


@override_settings(BATCH_CHUNK_ROWS=10)
def test_a_chunk_whose_job_is_deleted_while_it_scores_ends_quietly(
    admin_client, monkeypatch: pytest.MonkeyPatch, caplog, django_capture_on_commit_callbacks
) -> None:
    job = planned_batch(15)
    scoring = batching._score_into_part

    def deleted_meanwhile(chunk: object) -> tuple[int, int]:
        with django_capture_on_commit_callbacks(execute=True):
            PredictionJob.objects.filter(pk=job.pk).delete()  # its work folder goes with it
        return scoring(chunk)  # writing the part finds no folder

    monkeypatch.setattr(batching, "_score_into_part", deleted_meanwhile)

    outcome = batching.score_chunk(chunk_ids(job)[0], "t")

    assert outcome["skipped"] == "job deleted"
    assert not batching.work_dir(job.pk).exists()
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


@override_settings(BATCH_CHUNK_ROWS=10)
def test_a_job_deleted_while_its_parts_are_merged_leaves_no_merged_files(
    admin_client, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    job = planned_batch(15, bad_rows=1)
    first, last = chunk_ids(job)
    batching.score_chunk(first, "t")
    merging = batching._merge

    def deleted_after_the_merge(merged: PredictionJob, result_name: str) -> str:
        error_name = merging(merged, result_name)
        with django_capture_on_commit_callbacks(execute=True):
            PredictionJob.objects.filter(pk=job.pk).delete()
        return error_name

    monkeypatch.setattr(batching, "_merge", deleted_after_the_merge)

    batching.score_chunk(last, "t")  # the last chunk merges

    results = Path(default_storage.path("results"))
    assert [path.name for path in results.glob(f"{job.pk}*")] == []
