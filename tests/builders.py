"""Rows for tests, built through the same functions the product uses."""

import io
from functools import cache
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge

from modelregistry import versions
from modelregistry.models import ModelVersion, RegisteredModel, Stage, TaskKind

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@cache
def iris_estimator() -> LogisticRegression:
    data = load_iris()
    return LogisticRegression(max_iter=500).fit(data.data, data.target)


@cache
def diabetes_estimator() -> Ridge:
    data = load_diabetes()
    return Ridge().fit(data.data, data.target)


def iris_rows(count: int, offset: int = 0) -> list[dict[str, float]]:
    data = load_iris().data
    picked = [data[(offset + i) % len(data)] for i in range(count)]
    return [dict(zip(IRIS_FEATURES, map(float, row), strict=True)) for row in picked]


def artifact_bytes(estimator: Any) -> io.BytesIO:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    return buffer


def make_model(name: str = "iris", kind: str = TaskKind.CLASSIFICATION, **fields) -> Any:
    features = IRIS_FEATURES if name.startswith("iris") else [f"x{i}" for i in range(10)]
    schema = [{"name": feature, "type": "number"} for feature in features]
    model, _ = RegisteredModel.objects.get_or_create(
        name=name, defaults={"task_kind": kind, "input_schema": schema, **fields}
    )
    return model


def make_version(
    name: str = "iris", *, estimator: Any = None, stage: str = Stage.PRODUCTION
) -> ModelVersion:
    """A registered version of an iris classifier (or diabetes regressor for other names)."""
    is_iris = name.startswith("iris")
    model = make_model(name, TaskKind.CLASSIFICATION if is_iris else TaskKind.REGRESSION)
    estimator = estimator or (iris_estimator() if is_iris else diabetes_estimator())
    version = versions.register_version(
        model,
        artifact_bytes(estimator),
        estimator_class=f"{type(estimator).__module__}.{type(estimator).__name__}",
    )
    if stage != Stage.NONE:
        if stage == Stage.PRODUCTION:
            model.versions.filter(stage=Stage.PRODUCTION).update(stage=Stage.ARCHIVED)
        ModelVersion.objects.filter(pk=version.pk).update(stage=stage)
        version.refresh_from_db()
    return version


def in_process_predictions(version: ModelVersion, rows: list[dict[str, float]]) -> np.ndarray:
    estimator = joblib.load(version.artifact.path)
    features = version.registered_model.feature_names
    return estimator.predict(np.array([[row[f] for f in features] for row in rows]))


def make_training_spec(
    name: str = "iris-nightly",
    *,
    model: str = "iris",
    builtin: str = "iris",
    estimator: str = "logistic_regression",
    metric: str = "accuracy",
    **fields: Any,
) -> Any:
    """A training spec on a dataset that ships with scikit-learn (iris: a classifier)."""
    from modelregistry.models import Dataset, TrainingSpec

    kind = TaskKind.REGRESSION if builtin == "diabetes" else TaskKind.CLASSIFICATION
    dataset, _ = Dataset.objects.get_or_create(name=f"{builtin}-builtin", builtin=builtin)
    return TrainingSpec.objects.create(
        name=name,
        registered_model=make_model(model, kind),
        dataset=dataset,
        estimator=estimator,
        primary_metric=metric,
        **fields,
    )


def flip_a_byte(version: ModelVersion) -> None:
    """Corrupt the version's stored artifact, as a disk or a hand might."""
    path = Path(version.artifact.path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
