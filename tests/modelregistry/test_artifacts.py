"""Uploaded artifacts are read without running their code and must be fitted estimators."""

import io
from pathlib import Path

import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from modelregistry import artifacts
from modelregistry.models import ArtifactFormat, TaskKind
from tests.builders import IRIS_FEATURES, artifact_bytes, iris_estimator
from tests.modelregistry.hostile import hostile_artifacts

IRIS = load_iris()


def test_a_fitted_classifier_is_accepted_with_its_kind_class_and_versions() -> None:
    inspection = artifacts.inspect_artifact(artifact_bytes(iris_estimator()), "joblib")
    assert inspection.estimator_class == "sklearn.linear_model._logistic.LogisticRegression"
    assert inspection.task_kind == TaskKind.CLASSIFICATION
    assert inspection.feature_names == ["x0", "x1", "x2", "x3"]
    assert set(inspection.library_versions) == {"python", "scikit-learn", "joblib", "numpy"}
    assert inspection.params["max_iter"] == 500
    assert list(inspection.estimator.predict(IRIS.data[:3])) == [0, 0, 0]


def test_the_schema_comes_from_the_dataframe_columns_the_estimator_was_fitted_on() -> None:
    frame = pd.DataFrame(IRIS.data, columns=IRIS_FEATURES)
    estimator = LogisticRegression(max_iter=500).fit(frame, IRIS.target)
    inspection = artifacts.inspect_artifact(artifact_bytes(estimator), "joblib")
    assert inspection.input_schema == [{"name": name, "type": "number"} for name in IRIS_FEATURES]


def test_a_skops_artifact_is_accepted() -> None:
    estimator = RandomForestClassifier(n_estimators=3, random_state=0).fit(IRIS.data, IRIS.target)
    inspection = artifacts.inspect_artifact(artifacts.dump_skops(estimator), ArtifactFormat.SKOPS)
    assert inspection.estimator_class.endswith("RandomForestClassifier")
    assert (inspection.estimator.predict(IRIS.data) == estimator.predict(IRIS.data)).all()


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ({"weights": [1, 2, 3]}, artifacts.NotAnEstimator, "holds a dict, not a scikit-learn"),
        (StandardScaler().fit(IRIS.data), artifacts.NoPredict, "has no predict method"),
        (LogisticRegression(), artifacts.NotFitted, "is not fitted"),
    ],
    ids=["not an estimator", "no predict", "not fitted"],
)
def test_what_is_not_a_fitted_predictor_is_refused(payload, error, message) -> None:
    with pytest.raises(error, match=message):
        artifacts.inspect_artifact(artifact_bytes(payload), "joblib")


def test_an_artifact_over_the_size_limit_is_refused_before_it_is_read(settings) -> None:
    settings.MAX_ARTIFACT_BYTES = 100
    with pytest.raises(artifacts.ArtifactTooLarge, match="the limit is 100 bytes") as refused:
        artifacts.inspect_artifact(artifact_bytes(iris_estimator()), "joblib")
    assert refused.value.http_status == 413


def test_bytes_that_are_not_an_artifact_are_refused_clearly() -> None:
    with pytest.raises(artifacts.UnreadableArtifact, match="not a readable joblib artifact"):
        artifacts.inspect_artifact(io.BytesIO(b"definitely not a pickle"), "joblib")
    with pytest.raises(artifacts.UnreadableArtifact, match="not a readable skops artifact"):
        artifacts.inspect_artifact(io.BytesIO(b"not a zip file"), "skops")


@pytest.mark.parametrize("kind", list(hostile_artifacts(Path("m"))))
def test_a_hostile_pickle_is_refused_without_its_code_running(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    hostile = hostile_artifacts(marker)[kind]
    with pytest.raises(artifacts.UnsafeArtifact, match="not an allowed") as refused:
        artifacts.inspect_artifact(io.BytesIO(hostile), "joblib")
    assert refused.value.code == "unsafe_artifact"
    assert not marker.exists()


def test_own_types_can_be_allowed_in_settings(settings) -> None:
    from collections import Counter  # stands in for a user's own module

    payload = artifact_bytes(Counter(a=1))
    with pytest.raises(artifacts.UnsafeArtifact, match=r"collections\.Counter"):
        artifacts.read_joblib(payload)
    settings.UNPICKLE_EXTRA_ALLOWED = ["collections.Counter"]
    assert artifacts.read_joblib(payload) == Counter(a=1)


def _colours() -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.DataFrame(IRIS.data[:, :2], columns=IRIS_FEATURES[:2])
    frame["colour"] = pd.Series(IRIS.target).map({0: "red", 1: "green", 2: "blue"})
    return frame, pd.Series(IRIS.target)


def _one_hot_pipeline(frame: pd.DataFrame, target: pd.Series) -> Pipeline:
    encode = ColumnTransformer(
        [("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(frame, target)


def _ordinal_forest(frame: pd.DataFrame, target: pd.Series) -> Pipeline:
    encode = ColumnTransformer([("colour", OrdinalEncoder(), ["colour"])], remainder="passthrough")
    forest = RandomForestClassifier(n_estimators=3, random_state=0)
    return make_pipeline(encode, forest).fit(frame, target)


@pytest.mark.parametrize("fit", [_one_hot_pipeline, _ordinal_forest])
def test_an_estimator_fitted_on_text_categories_is_refused(fit) -> None:
    # Features are sent to the model as numbers, so it could never score a row: every job
    # failed with "ufunc 'isnan' not supported for the input types".
    estimator = fit(*_colours())
    with pytest.raises(artifacts.TextFeatures, match=r"text in colour \('"):
        artifacts.inspect_artifact(artifact_bytes(estimator), "joblib")


def test_an_estimator_encoding_categories_stored_as_numbers_is_accepted() -> None:
    frame, target = _colours()
    frame["colour"] = frame["colour"].map({"red": 0.0, "green": 1.0, "blue": 2.0})
    estimator = _one_hot_pipeline(frame, target)
    inspection = artifacts.inspect_artifact(artifact_bytes(estimator), "joblib")
    assert inspection.feature_names == [*IRIS_FEATURES[:2], "colour"]
