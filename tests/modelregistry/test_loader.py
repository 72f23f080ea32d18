"""The loader: sha256 checked before unpickling, hostile bytes refused, a bounded LRU."""

import io
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from rest_framework.test import APIClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelregistry import artifacts, loader, versions
from modelregistry.models import ModelVersion, Stage
from modelregistry.tasks import verify_version
from predictions.models import PredictionJob
from tests.base import make_user
from tests.builders import flip_a_byte, iris_estimator, iris_rows, make_model, make_version
from tests.modelregistry.hostile import hostile_artifacts


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    loader.clear_cache()


@pytest.mark.django_db
def test_a_loaded_version_predicts_like_the_estimator_that_was_registered() -> None:
    version = make_version("iris")
    estimator = loader.load(version)
    rows = [[row[f] for f in version.registered_model.feature_names] for row in iris_rows(3)]
    assert list(estimator.predict(rows)) == [0, 0, 0]
    assert loader.load(version) is estimator  # the second load is the cached object


@pytest.mark.django_db
def test_a_flipped_byte_is_refused_and_the_version_marked_unusable(private_artifacts) -> None:
    version = make_version("iris", stage=Stage.STAGING)
    flip_a_byte(version)
    with pytest.raises(loader.ArtifactMismatch, match="does not match its sha256") as refused:
        loader.load(version)
    assert refused.value.code == "artifact_mismatch"
    version.refresh_from_db()
    assert not version.is_usable
    assert version.unusable_reason == "stored artifact does not match its sha256"
    with pytest.raises(versions.StageConflict, match="unusable"):
        versions.promote(version, Stage.PRODUCTION)


@pytest.mark.django_db
def test_a_cached_model_is_not_served_once_its_version_is_unusable() -> None:
    version = make_version("iris")
    loader.load(version)
    version.is_usable, version.unusable_reason = False, "stored artifact cannot be read"
    with pytest.raises(loader.ArtifactMismatch, match="iris:1 is unusable") as refused:
        loader.load(version)
    assert refused.value.code == "artifact_mismatch"


@pytest.mark.django_db
def test_verifying_a_mismatch_elsewhere_forgets_cached_lookups_of_the_version(
    private_artifacts,
) -> None:
    version = make_version("iris", stage=Stage.STAGING)
    assert versions.resolve("iris@staging").is_usable  # now cached
    flip_a_byte(version)
    assert loader.verify(ModelVersion.objects.get(pk=version.pk))["ok"] is False
    assert not versions.resolve("iris@staging").is_usable


@pytest.mark.django_db
def test_the_cache_keeps_at_most_model_cache_size_versions(settings, private_artifacts) -> None:
    settings.MODEL_CACHE_SIZE = 2
    first, second, third = (make_version("iris", stage=Stage.NONE) for _ in range(3))
    for version in (first, second, third):
        loader.load(version)
    assert loader.cached_count() == 2
    # The least recently used (first) was dropped: loading it reads storage again, which now
    # fails; the two recent ones are still served from memory although their files changed.
    for version in (first, second, third):
        flip_a_byte(version)
    loader.load(third)
    loader.load(second)
    with pytest.raises(loader.ArtifactMismatch):
        loader.load(first)


@pytest.mark.django_db
def test_a_hostile_stored_artifact_is_refused_at_load_without_running(
    tmp_path: Path, private_artifacts
) -> None:
    marker = tmp_path / "marker"
    model = make_model("iris")
    for kind, payload in hostile_artifacts(marker).items():
        # Written straight into the store, as if an upload check had been bypassed.
        version = versions.register_version(model, io.BytesIO(payload), estimator_class=kind)
        with pytest.raises(artifacts.UnsafeArtifact):
            loader.load(version)
    assert not marker.exists()


@pytest.mark.django_db
def test_a_skops_version_loads(private_artifacts) -> None:
    version = versions.register_estimator(
        make_model("iris"), iris_estimator(), artifact_format="skops"
    )
    assert version.artifact.name.endswith(".skops")
    assert loader.load(version).predict([[5.1, 3.5, 1.4, 0.2]])[0] == 0


@pytest.mark.django_db(transaction=True)
def test_a_worker_verifies_a_good_version_and_refuses_a_flipped_byte(live_worker) -> None:
    good = make_version("iris", stage=Stage.NONE)
    bad = make_version("iris", stage=Stage.PRODUCTION)
    flip_a_byte(bad)
    assert verify_version.delay(good.pk).get(timeout=30) == {
        "ref": good.ref,
        "ok": True,
        "estimator": "LogisticRegression",
    }
    outcome = verify_version.delay(bad.pk).get(timeout=30)
    assert (outcome["ok"], outcome["code"]) == (False, "artifact_mismatch")
    bad.refresh_from_db()
    assert not bad.is_usable  # written by the worker process


@pytest.mark.django_db(transaction=True)
def test_restoring_the_file_and_verifying_makes_a_version_usable_again(live_worker) -> None:
    version = make_version("iris", stage=Stage.NONE)
    original = Path(version.artifact.path).read_bytes()
    flip_a_byte(version)
    assert verify_version.delay(version.pk).get(timeout=30)["ok"] is False
    version.artifact.storage.delete(version.artifact.name)
    version.artifact.storage.save(version.artifact.name, ContentFile(original))
    assert verify_version.delay(version.pk).get(timeout=30)["ok"] is True
    version.refresh_from_db()
    assert version.is_usable


@pytest.mark.django_db(transaction=True)
def test_a_job_on_a_flipped_artifact_fails_with_artifact_mismatch_and_no_output(
    live_worker,
) -> None:
    # Bytes no earlier test registered, so no worker holds this (pk, sha256) in its cache.
    data = load_iris()
    estimator = LogisticRegression(C=0.123, max_iter=500).fit(data.data, data.target)
    version = make_version("iris", estimator=estimator, stage=Stage.PRODUCTION)
    flip_a_byte(version)
    client = APIClient()
    client.force_authenticate(make_user())
    answer = client.post(
        "/api/v1/jobs/?wait=20", {"model": "iris", "inputs": iris_rows(2)}, format="json"
    )
    job = PredictionJob.objects.get(pk=answer.json()["id"])
    assert (job.status, job.error_code) == ("failed", "artifact_mismatch")
    assert not job.outputs
    version.refresh_from_db()
    assert not version.is_usable
