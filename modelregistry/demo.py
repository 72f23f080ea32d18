"""Demo models trained on datasets that ship with scikit-learn, so a new user can predict."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn import datasets
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import versions
from .models import (
    BuiltinDataset,
    Dataset,
    Estimator,
    Metric,
    ModelVersion,
    PromotionPolicy,
    RegisteredModel,
    Stage,
    TaskKind,
    TrainingSpec,
    VersionSource,
)

HOLDOUT_SHARE = 0.25
SEED = 0


@dataclass(frozen=True)
class Demo:
    name: str
    load: Callable[..., Any]
    build: Callable[[], Any]
    task_kind: str
    description: str


DEMOS = [
    Demo(
        "iris",
        datasets.load_iris,
        lambda: LogisticRegression(max_iter=1000),
        TaskKind.CLASSIFICATION,
        "Iris species (0 setosa, 1 versicolor, 2 virginica) from flower measurements in cm.",
    ),
    Demo(
        "wine",
        datasets.load_wine,
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        TaskKind.CLASSIFICATION,
        "Wine cultivar (0, 1, 2) from 13 chemical measurements.",
    ),
    Demo(
        "diabetes",
        datasets.load_diabetes,
        lambda: Ridge(alpha=0.1),
        TaskKind.REGRESSION,
        "Disease progression one year after baseline, from 10 scaled patient measurements.",
    ),
]


def seed() -> list[tuple[str, ModelVersion | None]]:
    """Train, register and promote each demo model that does not exist yet.

    Returns (name, version) pairs; version is None for a model that was already there, so
    running it again changes nothing.
    """
    return [(demo.name, seed_one(demo)) for demo in DEMOS]


def seed_one(demo: Demo) -> ModelVersion | None:
    if RegisteredModel.objects.filter(name=demo.name).exists():
        return None
    features, target = _dataset(demo)
    x_train, x_test, y_train, y_test = train_test_split(
        features,
        target,
        test_size=HOLDOUT_SHARE,
        random_state=SEED,
        stratify=target if demo.task_kind == TaskKind.CLASSIFICATION else None,
    )
    estimator = demo.build().fit(x_train, y_train)
    metrics = holdout_metrics(demo.task_kind, y_test, estimator.predict(x_test))
    model = RegisteredModel.objects.create(
        name=demo.name,
        task_kind=demo.task_kind,
        description=demo.description,
        input_schema=[{"name": name, "type": "number"} for name in features.columns],
    )
    version = versions.register_estimator(
        model,
        estimator,
        source=VersionSource.TRAINING,
        metrics=metrics,
        description=f"Demo: {type(estimator).__name__} on scikit-learn's {demo.name} dataset, "
        f"{int(HOLDOUT_SHARE * 100)}% holdout.",
    )
    return versions.promote(version, Stage.PRODUCTION, note="demo seed")


def _dataset(demo: Demo) -> tuple[pd.DataFrame, pd.Series]:
    bunch = demo.load(as_frame=True)
    return bunch.data.rename(columns=feature_name), bunch.target


def feature_name(column: str) -> str:
    """'sepal length (cm)' becomes 'sepal_length', 'od280/od315_of_diluted_wines' likewise."""
    without_unit = re.sub(r"\(.*?\)", "", column)
    return re.sub(r"\W+", "_", without_unit).strip("_").lower()


def holdout_metrics(task_kind: str, truth: Any, predicted: Any) -> dict[str, float]:
    if task_kind == TaskKind.REGRESSION:
        return {
            Metric.RMSE: float(root_mean_squared_error(truth, predicted)),
            Metric.MAE: float(mean_absolute_error(truth, predicted)),
            Metric.R2: float(r2_score(truth, predicted)),
        }
    return {
        Metric.ACCURACY: float(accuracy_score(truth, predicted)),
        Metric.F1: float(f1_score(truth, predicted, average="macro")),
    }


def seed_training() -> TrainingSpec | None:
    """A built-in iris dataset and an unscheduled "if better" spec for the demo iris model.

    None when the iris model is missing or the spec already exists (running it again
    changes nothing).
    """
    model = RegisteredModel.objects.filter(name="iris").first()
    if model is None or TrainingSpec.objects.filter(name="iris-logistic").exists():
        return None
    dataset, _ = Dataset.objects.get_or_create(
        name="iris-builtin",
        defaults={"builtin": BuiltinDataset.IRIS, "description": "scikit-learn's iris."},
    )
    return TrainingSpec.objects.create(
        name="iris-logistic",
        registered_model=model,
        dataset=dataset,
        estimator=Estimator.LOGISTIC_REGRESSION,
        params={"max_iter": 1000},
        holdout_share=HOLDOUT_SHARE,
        seed=SEED,
        primary_metric=Metric.ACCURACY,
        promotion_policy=PromotionPolicy.IF_BETTER,
    )
