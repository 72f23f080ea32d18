"""The registry API: everyone signed in reads; only staff with the permission upload or promote."""

import http.client
import io
import json
import math
import pickle
import resource
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from django.conf import settings
from django.db import DatabaseError
from rest_framework.test import APIClient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelregistry import artifacts, versions
from modelregistry.models import ModelVersion, RegisteredModel, Stage, TaskKind
from modelregistry.versions import promote
from tests.base import make_user, staff, stranger
from tests.builders import (
    IRIS_FEATURES,
    artifact_bytes,
    diabetes_estimator,
    make_model,
    make_version,
)
from tests.modelregistry.hostile import hostile_artifacts


@pytest.fixture
def as_staff(db, private_artifacts) -> APIClient:
    return client_for(staff())


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def upload(client: APIClient, name: str, data: bytes, filename: str = "m.joblib", **fields):
    body = {"file": _named(data, filename), **fields}
    return client.post(f"/api/v1/models/{name}/versions/", body, format="multipart")


def _named(data: bytes, filename: str) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = filename
    return buffer


def text_category_pipeline() -> Pipeline:
    frame = pd.DataFrame({"colour": ["red", "blue", "red", "green"], "size": [1, 2, 3, 4]})
    encode = ColumnTransformer([("colour", OneHotEncoder(), ["colour"])], remainder="passthrough")
    return make_pipeline(encode, LogisticRegression()).fit(frame, [0, 1, 0, 1])


def iris_frame_estimator() -> LogisticRegression:
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=IRIS_FEATURES)
    return LogisticRegression(max_iter=500).fit(frame, data.target)


def stored_artifacts(name: str) -> list[Path]:
    folder = Path(settings.ARTIFACT_ROOT) / "artifacts" / name
    return sorted(folder.iterdir()) if folder.exists() else []


def test_staff_upload_a_good_artifact_and_a_new_model_takes_its_schema(as_staff) -> None:
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    response = upload(as_staff, "flowers", data, description="first cut")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["ref"], body["stage"], body["format"]) == ("flowers:1", "none", "joblib")
    assert (body["size"], body["description"]) == (len(data), "first cut")
    assert body["estimator_class"].endswith("LogisticRegression")
    assert body["library_versions"]["scikit-learn"]
    model = RegisteredModel.objects.get(name="flowers")
    assert model.task_kind == "classification"
    assert model.feature_names == IRIS_FEATURES
    assert [path.name for path in stored_artifacts("flowers")] == ["v1.joblib"]


def test_a_second_upload_becomes_version_two_with_its_metrics(as_staff) -> None:
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    upload(as_staff, "flowers", data)
    response = upload(as_staff, "flowers", data, metrics='{"accuracy": 0.97}')
    assert response.status_code == 201
    assert (response.json()["version"], response.json()["metrics"]) == (2, {"accuracy": 0.97})


@pytest.mark.parametrize(
    "metrics", ['{"accuracy": 1e999}', "[" * 1000 + "]" * 1000], ids=["infinite", "deep"]
)
def test_metrics_json_cannot_mean_is_a_400_and_nothing_is_stored(as_staff, metrics) -> None:
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    response = upload(as_staff, "flowers", data, metrics=metrics)
    assert (response.status_code, response.json()["code"]) == (400, "bad_json")
    assert stored_artifacts("flowers") == []


@pytest.mark.parametrize(
    ("metrics", "said"),
    [
        ({f"m{i}": 0.5 for i in range(51)}, "at most 50 metrics; these are 51"),
        ({"a" * 101: 0.5}, "1 to 100 characters; one has 101"),
        ({"": 0.5}, "1 to 100 characters; one has 0"),
    ],
    ids=["too many", "name too long", "empty name"],
)
def test_metrics_past_the_limits_are_a_400_naming_metrics_and_nothing_is_stored(
    as_staff, metrics, said
) -> None:
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    response = upload(as_staff, "flowers", data, metrics=json.dumps(metrics))
    body = response.json()
    assert (response.status_code, body["code"], body["field"]) == (400, "bad_metrics", "metrics")
    assert said in body["detail"]
    assert stored_artifacts("flowers") == []
    assert not RegisteredModel.objects.exists()


def test_fifty_metrics_with_names_of_100_characters_are_accepted(as_staff) -> None:
    metrics = {f"{i:02d}" + "m" * 98: i / 100 for i in range(50)}
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    response = upload(as_staff, "flowers", data, metrics=json.dumps(metrics))
    assert response.status_code == 201, response.json()
    assert response.json()["metrics"] == metrics


def test_the_metric_limits_are_settings(as_staff, settings) -> None:
    settings.MAX_METRICS, settings.MAX_METRIC_NAME_LENGTH = 2, 3
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    assert upload(as_staff, "flowers", data, metrics='{"a": 1, "b": 2, "c": 3}').status_code == 400
    assert upload(as_staff, "flowers", data, metrics='{"abcd": 1}').status_code == 400
    assert upload(as_staff, "flowers", data, metrics='{"abc": 1, "b": 2}').status_code == 201


def test_an_upload_with_a_field_it_does_not_know_is_refused(as_staff) -> None:
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    response = upload(as_staff, "flowers", data, metric='{"accuracy": 0.9}')
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "metric")
    assert stored_artifacts("flowers") == []


def test_a_version_the_database_refuses_leaves_no_artifact_file(as_staff) -> None:
    upload(as_staff, "flowers", artifact_bytes(iris_frame_estimator()).getvalue())
    model = RegisteredModel.objects.get(name="flowers")
    with pytest.raises(DatabaseError):  # an infinity is no JSON: the row cannot be written
        versions.register_version(
            model,
            artifact_bytes(iris_frame_estimator()),
            estimator_class="LogisticRegression",
            metrics={"accuracy": math.inf},
        )
    assert [path.name for path in stored_artifacts("flowers")] == ["v1.joblib"]


def test_a_skops_upload_is_registered_in_that_format(as_staff) -> None:
    data = artifacts.dump_skops(iris_frame_estimator()).getvalue()
    response = upload(as_staff, "flowers", data, filename="model.skops")
    assert response.status_code == 201, response.json()
    assert response.json()["format"] == "skops"
    assert [path.name for path in stored_artifacts("flowers")] == ["v1.skops"]


def test_an_upload_whose_feature_count_disagrees_with_the_schema_is_refused(as_staff) -> None:
    make_version("iris")  # schema: the four iris features
    data = load_diabetes()
    three_features = LogisticRegression().fit(data.data[:, :3], data.target > 140)
    response = upload(as_staff, "iris", artifact_bytes(three_features).read())
    assert (response.status_code, response.json()["code"]) == (400, "feature_mismatch")
    assert "takes 3 features, but iris's schema has 4" in response.json()["detail"]
    four_features = LogisticRegression().fit(data.data[:, :4], data.target > 140)
    assert upload(as_staff, "iris", artifact_bytes(four_features).read()).status_code == 201


def test_a_regressor_for_a_classification_model_is_refused(as_staff) -> None:
    make_version("iris")
    response = upload(as_staff, "iris", artifact_bytes(diabetes_estimator()).read())
    assert (response.status_code, response.json()["code"]) == (400, "task_kind_mismatch")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"not": "a model"}, "not_an_estimator"),
        (LogisticRegression(), "not_fitted"),
        (text_category_pipeline(), "text_features"),  # rows are sent as numbers
    ],
)
def test_what_is_not_a_fitted_estimator_is_refused_as_json(as_staff, payload, code) -> None:
    response = upload(as_staff, "flowers", artifact_bytes(payload).read())
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert not RegisteredModel.objects.filter(name="flowers").exists()
    assert stored_artifacts("flowers") == []


def test_an_artifact_over_the_limit_is_refused_with_413(as_staff, settings) -> None:
    settings.MAX_ARTIFACT_BYTES = 1000
    response = upload(as_staff, "flowers", artifact_bytes(iris_frame_estimator()).read())
    assert (response.status_code, response.json()["code"]) == (413, "artifact_too_large")


@pytest.mark.parametrize("kind", list(hostile_artifacts(Path("m"))))
def test_a_hostile_upload_by_staff_is_refused_and_its_code_never_runs(
    as_staff, kind: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    response = upload(as_staff, "flowers", hostile_artifacts(marker)[kind])
    assert (response.status_code, response.json()["code"]) == (400, "unsafe_artifact")
    assert "not an allowed scikit-learn, NumPy or SciPy type" in response.json()["detail"]
    assert not marker.exists()
    assert ModelVersion.objects.count() == 0
    assert stored_artifacts("flowers") == []


class _Inflating:
    """Unpickles as list(range(N)), with only allow-listed builtins: N pointers and ints."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __reduce__(self) -> tuple:
        return (list, (range(self.count),))


@pytest.mark.parametrize(
    "artifact",
    [
        pickle.dumps(_Inflating(60_000_000)),  # about 2.4 GB as a list, from 60 bytes
        # A megabyte of joblib-compressed zeros that is 3 GB once read.
        "compressed",
    ],
    ids=["list of a range", "compressed array"],
)
def test_an_upload_that_inflates_past_the_memory_cap_is_refused_in_its_own_process(
    as_staff, settings, artifact
) -> None:
    # Read in the web process, these took its memory (and, larger, brought it down).
    if artifact == "compressed":
        buffer = io.BytesIO()
        joblib.dump(np.zeros(400_000_000), buffer, compress=9)
        artifact = buffer.getvalue()
    settings.MAX_ARTIFACT_MEMORY_BYTES = 2 * 1024**3
    grown_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    response = upload(as_staff, "flowers", artifact)

    assert (response.status_code, response.json()["code"]) == (413, "artifact_too_large")
    assert "more than 2147483648 bytes of memory" in response.json()["detail"]
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - grown_before
    assert grown_kb < 200_000  # this process's peak: not the artifact's gigabytes
    assert ModelVersion.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["a user", "staff without the permission"])
def test_only_staff_with_the_registry_permission_may_upload_or_promote(who: str) -> None:
    version = make_version("iris", stage=Stage.STAGING)
    user = stranger() if who == "a user" else make_user("helper", staff=True)
    client = client_for(user)
    response = upload(client, "iris", artifact_bytes(iris_frame_estimator()).read())
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    response = client.post("/api/v1/models/iris/versions/1/promote/", {"stage": "production"})
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    response = client.post("/api/v1/models/iris/rollback/", {})
    assert response.status_code == 403
    version.refresh_from_db()
    assert (version.stage, ModelVersion.objects.count()) == (Stage.STAGING, 1)


@pytest.mark.django_db
def test_anonymous_callers_get_401_json() -> None:
    response = APIClient().get("/api/v1/models/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_everyone_signed_in_reads_models_and_versions() -> None:
    make_version("iris", stage=Stage.ARCHIVED)
    second = make_version("iris", stage=Stage.PRODUCTION)
    make_version("diabetes", stage=Stage.STAGING)
    client = client_for(stranger())
    listing = client.get("/api/v1/models/").json()["results"]
    assert [(m["name"], m["production_version"], m["versions_count"]) for m in listing] == [
        ("diabetes", None, 1),
        ("iris", 2, 2),
    ]
    iris = client.get("/api/v1/models/iris/").json()
    assert [feature["name"] for feature in iris["features"]] == IRIS_FEATURES
    versions = client.get("/api/v1/models/iris/versions/").json()["results"]
    assert [(v["version"], v["stage"], v["sha256"]) for v in versions] == [
        (2, "production", second.sha256),
        (1, "archived", versions[1]["sha256"]),
    ]
    assert client.get("/api/v1/models/iris/versions/2/").json()["stage_history"] == []


@pytest.mark.django_db
def test_a_version_no_user_made_or_promoted_answers_null_for_its_user() -> None:
    version = make_version("iris", stage=Stage.NONE)
    promote(version, Stage.PRODUCTION, note="seeded")  # no user, as the demo seed
    client = client_for(stranger())
    (listed,) = client.get("/api/v1/models/iris/versions/").json()["results"]
    detail = client.get("/api/v1/models/iris/versions/1/").json()
    assert (listed["created_by"], detail["created_by"]) == (None, None)
    assert [change["changed_by"] for change in detail["stage_history"]] == [None]


@pytest.mark.django_db
def test_unknown_models_and_versions_are_404_json() -> None:
    make_version("iris")
    client = client_for(stranger())
    for url in [
        "/api/v1/models/nope/",
        "/api/v1/models/nope/versions/",
        "/api/v1/models/iris/versions/9/",
    ]:
        response = client.get(url)
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), url


def test_staff_promote_through_the_api_and_the_old_production_is_archived(as_staff) -> None:
    first = make_version("iris", stage=Stage.PRODUCTION)
    make_version("iris", stage=Stage.NONE)
    response = as_staff.post(
        "/api/v1/models/iris/versions/2/promote/", {"stage": "production", "note": "better"}
    )
    assert response.status_code == 200, response.json()
    assert response.json()["stage"] == "production"
    history = response.json()["stage_history"]
    assert [(h["from_stage"], h["to_stage"], h["changed_by"], h["note"]) for h in history] == [
        ("none", "production", "staff", "better")
    ]
    first.refresh_from_db()
    assert first.stage == Stage.ARCHIVED
    response = as_staff.post("/api/v1/models/iris/rollback/", {"note": "v2 misbehaves"})
    assert (response.status_code, response.json()["version"]) == (200, 1)


def test_bad_promotions_are_refused_as_json_not_500(as_staff) -> None:
    make_version("iris", stage=Stage.PRODUCTION)
    response = as_staff.post("/api/v1/models/iris/versions/1/promote/", {"stage": "tuesday"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    response = as_staff.post("/api/v1/models/iris/rollback/", {})
    assert (response.status_code, response.json()["code"]) == (409, "stage_conflict")
    response = upload(as_staff, "not a slug!", b"x")
    assert response.status_code == 404  # the URL itself does not match a model name


def test_a_model_name_over_100_characters_is_refused_as_too_long(as_staff) -> None:
    data = artifact_bytes(iris_frame_estimator()).getvalue()
    response = upload(as_staff, "m" * 101, data)
    body = response.json()
    assert (response.status_code, body["code"], body["field"]) == (400, "bad_input", "name")
    assert "too long" in body["detail"] and "100" in body["detail"]
    assert not RegisteredModel.objects.exists()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/models/iris/versions/1/promote/", {"stage": "staging", "force": True}),
        ("/api/v1/models/iris/rollback/", {"note": "x", "version": 1}),
    ],
)
def test_an_unknown_field_in_a_stage_change_is_refused(as_staff, path, body) -> None:
    make_version("iris", stage=Stage.NONE)
    response = as_staff.post(path, body, format="json")
    unknown = next(name for name in body if name not in ("stage", "note"))
    assert response.status_code == 400
    assert response.json() == {"detail": "Unknown field.", "code": "invalid", "field": unknown}
    assert ModelVersion.objects.get().stage == Stage.NONE


def test_a_validation_error_of_the_registry_names_its_field(as_staff) -> None:
    make_version("iris", stage=Stage.PRODUCTION)
    response = as_staff.post("/api/v1/models/iris/versions/1/promote/", {"stage": "tuesday"})
    body = response.json()
    assert (response.status_code, body["code"], body["field"]) == (400, "invalid", "stage")
    assert body["detail"] == '"tuesday" is not a valid choice.'


@pytest.mark.django_db
def test_a_models_versions_list_filters_by_stage() -> None:
    make_version("iris", stage=Stage.ARCHIVED)
    make_version("iris", stage=Stage.PRODUCTION)
    make_version("iris", stage=Stage.STAGING)
    client = client_for(stranger())

    def listed(query: str) -> list[int]:
        answer = client.get(f"/api/v1/models/iris/versions/?{query}")
        return [version["version"] for version in answer.json()["results"]]

    assert listed("stage=production") == [2]
    assert listed("stage=production&stage=staging") == [3, 2]
    assert listed("stage=none") == []
    assert listed("") == [3, 2, 1]
    answer = client.get("/api/v1/models/iris/versions/?stage=live")
    body = answer.json()
    assert (answer.status_code, body["code"], body["field"]) == (400, "invalid", "stage")
    assert "live" in body["detail"]


@pytest.mark.django_db
def test_the_models_list_filters_by_task_kind_and_searches_names_and_descriptions() -> None:
    make_version("iris")
    make_model("wine")  # a classifier
    make_model("diabetes", kind=TaskKind.REGRESSION, description="Blood sugar progression")
    client = client_for(stranger())

    def listed(query: str) -> list[str]:
        return [model["name"] for model in client.get(f"/api/v1/models/?{query}").json()["results"]]

    assert listed("task_kind=regression") == ["diabetes"]
    assert listed("task_kind=classification") == ["iris", "wine"]
    assert listed("search=IR") == ["iris"]
    assert listed("search=sugar") == ["diabetes"]
    assert listed("search=sugar&task_kind=classification") == []
    answer = client.get("/api/v1/models/?task_kind=clustering")
    body = answer.json()
    assert (answer.status_code, body["code"], body["field"]) == (400, "invalid", "task_kind")


@pytest.mark.django_db
def test_list_filters_leave_a_single_model_or_version_alone() -> None:
    make_version("iris", stage=Stage.PRODUCTION)
    client = client_for(stranger())
    assert client.get("/api/v1/models/iris/?task_kind=regression").status_code == 200
    assert client.get("/api/v1/models/iris/versions/1/?stage=staging").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_an_artifact_upload_over_the_limit_is_refused_before_its_body_is_read(
    live_web: str,
) -> None:
    # Only a megabyte of a body announced as larger than MAX_ARTIFACT_BYTES is ever sent: the
    # answer must come without the rest (it came once the whole body had been read).
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=staff())
    host, port = live_web.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/api/v1/models/iris/versions/")
        announced = settings.MAX_ARTIFACT_BYTES + 1024 * 1024
        conn.putheader("Content-Type", "multipart/form-data; boundary=xyz")
        conn.putheader("Content-Length", str(announced))
        conn.putheader("Authorization", f"Token {token.key}")
        part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="m.joblib"\r\n\r\n'
        conn.endheaders(part + b"x" * 1024 * 1024)
        answer = conn.getresponse()
        assert (answer.status, json.loads(answer.read())["code"]) == (413, "body_too_large")
    finally:
        conn.close()
    assert not RegisteredModel.objects.exists()
