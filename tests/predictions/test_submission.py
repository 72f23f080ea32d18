"""Submitting: the row is the ORM's; a lost idempotency race answers with the winner's job."""

from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from modelregistry import loader
from modelregistry.models import Stage
from predictions import submission
from predictions.models import PredictionJob
from tests.base import make_user
from tests.builders import IRIS_FEATURES, flip_a_byte, iris_rows, make_version


def lose_the_race(monkeypatch) -> None:
    """The next submission looks for its key before the winner's row exists."""
    looked_up = submission._existing
    calls: list[str] = []

    def not_there_yet(owner, key):
        calls.append(key)
        return None if len(calls) == 1 else looked_up(owner, key)

    monkeypatch.setattr(submission, "_existing", not_there_yet)


@pytest.mark.parametrize(
    "db_mode",
    [
        pytest.param("autocommit", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("inside a transaction", marks=pytest.mark.django_db),
    ],
)
def test_a_lost_idempotency_race_returns_the_first_job(monkeypatch, db_mode) -> None:
    make_version()
    owner = make_user(f"racer-{db_mode[:4]}")
    first, created = submission.submit_rows(owner, "iris", iris_rows(1), idempotency_key="k")

    lose_the_race(monkeypatch)
    second, created_again = submission.submit_rows(owner, "iris", iris_rows(1), idempotency_key="k")

    assert (second.pk, created, created_again) == (first.pk, True, False)
    assert PredictionJob.objects.filter(owner=owner).count() == 1


@pytest.mark.postgres  # the two databases adapt UUIDs, JSON and times differently
@pytest.mark.django_db
def test_a_submitted_job_is_stored_as_the_orm_would_store_it() -> None:
    make_version()
    submitted, _ = submission.submit_rows(make_user("writer"), "iris", iris_rows(2), priority=7)
    saved = PredictionJob(
        owner=submitted.owner,
        kind=submitted.kind,
        inputs=submitted.inputs,
        rows_total=2,
        **submission._common(submitted.version, "iris", 7, ""),
    )
    saved.save(force_insert=True)

    ours, orms = (PredictionJob.objects.values().get(pk=job.pk) for job in (submitted, saved))
    for name in ("id", "task_id", "created_at", "enqueued_at"):  # each job's own
        assert ours.pop(name) == getattr(submitted, name)
        orms.pop(name)
    assert ours == orms
    assert not submitted._state.adding  # a later save() updates it


def stored_uploads() -> list[Path]:
    folder = Path(default_storage.path("uploads"))
    return sorted(found for found in folder.rglob("*") if found.is_file())


@pytest.mark.django_db
def test_a_file_that_lost_an_idempotency_race_is_not_kept(monkeypatch) -> None:
    make_version()
    owner = make_user("uploader")
    content = (",".join(IRIS_FEATURES) + "\n1,2,3,4\n").encode()
    before = stored_uploads()
    first, _ = submission.submit_file(
        owner, "iris", SimpleUploadedFile("a.csv", content), size=len(content), idempotency_key="f"
    )

    lose_the_race(monkeypatch)
    second, created = submission.submit_file(
        owner, "iris", SimpleUploadedFile("b.csv", content), size=len(content), idempotency_key="f"
    )

    assert (second.pk, created) == (first.pk, False)
    assert [p for p in stored_uploads() if p not in before] == [Path(first.input_file.path)]


@pytest.mark.django_db
@pytest.mark.parametrize("ref", ["iris:2", "iris@staging"])
def test_a_version_a_worker_found_unusable_is_refused_even_after_it_was_resolved(ref) -> None:
    make_version()
    staging = make_version(stage=Stage.STAGING)
    client = APIClient()
    client.force_authenticate(make_user("submitter"))
    submit = {"model": ref, "inputs": iris_rows(1)}
    assert client.post("/api/v1/jobs/", submit, format="json").status_code == 201  # cached

    flip_a_byte(staging)
    assert loader.verify(staging)["code"] == "artifact_mismatch"  # "Verify in a worker"
    answer = client.post("/api/v1/jobs/", submit, format="json")

    assert answer.status_code == 409
    assert answer.json() == {
        "detail": "iris:2 is unusable (stored artifact does not match its sha256): "
        "submit to another version",
        "code": "unusable_version",
    }
    assert PredictionJob.objects.filter(version=staging).count() == 1
