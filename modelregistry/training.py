"""Training on a dataset: load it, build an allow-listed estimator, fit, score, decide promotion."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn import datasets as sklearn_datasets
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import train_test_split

from mlsite.errors import BadInput

from .models import (
    BuiltinDataset,
    Dataset,
    Estimator,
    Metric,
    PromotionPolicy,
    TaskKind,
    TrainingSpec,
)


class BadDataset(BadInput):
    code = "bad_dataset"


class BadSpec(BadInput):
    code = "bad_spec"


@dataclass(frozen=True)
class Allowed:
    """One allow-listed estimator: its class and the kind of model it makes."""

    cls: type[BaseEstimator]
    kind: str


ESTIMATORS: dict[str, Allowed] = {
    Estimator.LOGISTIC_REGRESSION: Allowed(LogisticRegression, TaskKind.CLASSIFICATION),
    Estimator.RIDGE: Allowed(Ridge, TaskKind.REGRESSION),
    Estimator.RANDOM_FOREST_CLASSIFIER: Allowed(RandomForestClassifier, TaskKind.CLASSIFICATION),
    Estimator.RANDOM_FOREST_REGRESSOR: Allowed(RandomForestRegressor, TaskKind.REGRESSION),
    Estimator.GRADIENT_BOOSTING_CLASSIFIER: Allowed(
        GradientBoostingClassifier, TaskKind.CLASSIFICATION
    ),
    Estimator.GRADIENT_BOOSTING_REGRESSOR: Allowed(GradientBoostingRegressor, TaskKind.REGRESSION),
    Estimator.HIST_GRADIENT_BOOSTING_CLASSIFIER: Allowed(
        HistGradientBoostingClassifier, TaskKind.CLASSIFICATION
    ),
    Estimator.HIST_GRADIENT_BOOSTING_REGRESSOR: Allowed(
        HistGradientBoostingRegressor, TaskKind.REGRESSION
    ),
    Estimator.DUMMY_CLASSIFIER: Allowed(DummyClassifier, TaskKind.CLASSIFICATION),
    Estimator.DUMMY_REGRESSOR: Allowed(DummyRegressor, TaskKind.REGRESSION),
}

METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    TaskKind.CLASSIFICATION: (Metric.ACCURACY, Metric.F1, Metric.ROC_AUC),
    TaskKind.REGRESSION: (Metric.RMSE, Metric.MAE, Metric.R2),
}
LOWER_IS_BETTER = {Metric.RMSE, Metric.MAE}

_LOADERS: dict[str, Callable[..., Any]] = {
    BuiltinDataset.IRIS: sklearn_datasets.load_iris,
    BuiltinDataset.WINE: sklearn_datasets.load_wine,
    BuiltinDataset.BREAST_CANCER: sklearn_datasets.load_breast_cancer,
    BuiltinDataset.DIGITS: sklearn_datasets.load_digits,
    BuiltinDataset.DIABETES: sklearn_datasets.load_diabetes,
}
FILE_SUFFIXES = (".csv", ".parquet")


# --- datasets ---------------------------------------------------------------------------


def feature_name(column: str) -> str:
    """A schema-friendly name: 'sepal length (cm)' becomes 'sepal_length'."""
    without_unit = re.sub(r"\(.*?\)", "", str(column))
    return re.sub(r"\W+", "_", without_unit).strip("_").lower() or str(column)


def load_dataset(dataset: Dataset) -> tuple[pd.DataFrame, pd.Series]:
    """The features (numeric, schema-friendly column names) and the target. Raises BadDataset."""
    if dataset.builtin:
        bunch = _LOADERS[dataset.builtin](as_frame=True)
        features, target = bunch.data, bunch.target
    else:
        with dataset.file.open("rb") as stream:
            frame = _read_table(stream, cast(str, dataset.file.name))
        column = dataset.target_column
        if column not in frame.columns:
            raise BadDataset(f"dataset {dataset.name!r} has no target column {column!r}")
        features, target = frame.drop(columns=[column]), frame[column]
    features = features.rename(columns=feature_name)
    # Rows first: a header alone reads as columns of no type, which called them non-numeric.
    if len(features) < 4:
        rows = f"{len(features)} rows" if len(features) else "no rows, only a header"
        raise BadDataset(f"dataset {dataset.name!r} has {rows}; 4 or more needed")
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise BadDataset(f"dataset {dataset.name!r} has non-numeric features: {non_numeric}")
    return features, target


def _read_table(stream: IO[bytes], name: str, *, header_only: bool = False) -> pd.DataFrame:
    suffix = PurePath(name).suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise BadDataset(f"{PurePath(name).name}: only CSV and Parquet files are accepted")
    try:
        if suffix == ".csv":
            return pd.read_csv(stream, nrows=0 if header_only else None)
        if header_only:  # the schema alone, without reading the row groups
            return pd.DataFrame(columns=pq.ParquetFile(stream).schema_arrow.names)
        return pd.read_parquet(stream)
    except (
        ValueError,
        OSError,
        pa.ArrowException,
    ) as exc:  # pandas and pyarrow raise these for unreadable files
        raise BadDataset(f"cannot read {PurePath(name).name}: {exc}") from None


def check_dataset_file(stream: IO[bytes], name: str, target_column: str) -> None:
    """Raises BadDataset unless the file is a readable CSV/Parquet with that target column."""
    if not target_column:
        raise BadDataset("name the target column of the file", field="target_column")
    try:
        columns = list(_read_table(stream, name, header_only=True).columns)
    finally:
        stream.seek(0)  # the caller still saves this upload
    if target_column not in columns:
        raise BadDataset(
            f"the file has no column {target_column!r} (columns: {', '.join(map(str, columns))})",
            field="target_column",
        )


# --- estimators and specs --------------------------------------------------------------


def build_estimator(estimator: str, params: Any, seed: int) -> BaseEstimator:
    """An unfitted allow-listed estimator with validated params. Raises BadSpec."""
    allowed = ESTIMATORS.get(estimator)
    if allowed is None:
        raise BadSpec(f"{str(estimator)!r} is not an allowed estimator", field="estimator")
    if not isinstance(params, dict):
        raise BadSpec("params must be a JSON object", field="params")
    model = allowed.cls()
    known = model.get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BadSpec(
            f"unknown params for {allowed.cls.__name__}: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(known))})",
            field="params",
        )
    defaults = {"random_state": seed} if "random_state" in known else {}
    model.set_params(**{**defaults, **params})
    try:
        model._validate_params()  # scikit-learn's own check of types and ranges, before any fit
    except (ValueError, TypeError) as exc:
        raise BadSpec(str(exc), field="params") from None
    return model


def check_spec(spec: TrainingSpec) -> None:
    """Raises BadSpec when the estimator, metric, params or holdout do not fit the model."""
    kind = spec.registered_model.task_kind
    allowed = ESTIMATORS.get(spec.estimator)
    if allowed is not None and allowed.kind != kind:
        raise BadSpec(
            f"{spec.get_estimator_display()} makes {allowed.kind} models, "
            f"but {spec.registered_model.name!r} is a {kind} model",
            field="estimator",
        )
    if spec.primary_metric not in METRICS_BY_KIND[kind]:
        raise BadSpec(
            f"{str(spec.primary_metric)!r} is not a {kind} metric "
            f"(choose one of {', '.join(METRICS_BY_KIND[kind])})",
            field="primary_metric",
        )
    if not 0 < spec.holdout_share < 1:
        raise BadSpec("holdout share must be between 0 and 1", field="holdout_share")
    build_estimator(spec.estimator, spec.params, spec.seed)


# --- fitting and scoring ---------------------------------------------------------------


@dataclass
class Holdout:
    features: np.ndarray
    target: np.ndarray


@dataclass
class Trained:
    estimator: BaseEstimator
    metrics: dict[str, float]
    holdout: Holdout
    feature_names: list[str]


def model_features(spec: TrainingSpec, features: pd.DataFrame) -> list[str]:
    """The dataset columns in the model's schema order; every schema feature must be there."""
    wanted = spec.registered_model.feature_names or list(features.columns)
    missing = [name for name in wanted if name not in features.columns]
    if missing:
        raise BadDataset(
            f"dataset {spec.dataset.name!r} lacks features of model "
            f"{spec.registered_model.name!r}: {', '.join(missing)} "
            f"(it has: {', '.join(features.columns)})"
        )
    return wanted


def train(spec: TrainingSpec) -> Trained:
    """Fit the spec's estimator on its dataset minus a seeded holdout, and score the holdout."""
    check_spec(spec)
    features, target = load_dataset(spec.dataset)
    names = model_features(spec, features)
    x_train, x_test, y_train, y_test = split(
        features[names].to_numpy(dtype=float), target.to_numpy(), spec
    )
    # Fitted on plain arrays in schema order: that is what the prediction path passes in.
    estimator = build_estimator(spec.estimator, spec.params, spec.seed).fit(x_train, y_train)
    holdout = Holdout(x_test, y_test)
    kind = spec.registered_model.task_kind
    return Trained(estimator, score(estimator, holdout, kind), holdout, names)


def split(
    features: np.ndarray, target: np.ndarray, spec: TrainingSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    is_classification = spec.registered_model.task_kind == TaskKind.CLASSIFICATION
    try:
        return train_test_split(
            features,
            target,
            test_size=spec.holdout_share,
            random_state=spec.seed,
            stratify=target if is_classification else None,
        )
    except ValueError:  # a class too rare to stratify: an unstratified split still works
        return train_test_split(
            features, target, test_size=spec.holdout_share, random_state=spec.seed
        )


def score(estimator: Any, holdout: Holdout, kind: str) -> dict[str, float]:
    """Every metric of the model's kind that is defined on the holdout (ROC AUC only with
    probabilities; R² not on a holdout of one row, where it is NaN, which JSON cannot hold)."""
    metrics = _scores(estimator, holdout, kind)
    return {name: value for name, value in metrics.items() if np.isfinite(value)}


def _scores(estimator: Any, holdout: Holdout, kind: str) -> dict[str, float]:
    predicted = estimator.predict(holdout.features)
    truth = holdout.target
    if kind == TaskKind.REGRESSION:
        return {
            Metric.RMSE: float(root_mean_squared_error(truth, predicted)),
            Metric.MAE: float(mean_absolute_error(truth, predicted)),
            Metric.R2: float(r2_score(truth, predicted)),
        }
    metrics: dict[str, float] = {
        Metric.ACCURACY: float(accuracy_score(truth, predicted)),
        Metric.F1: float(f1_score(truth, predicted, average="macro")),
    }
    auc = _roc_auc(estimator, holdout)
    if auc is not None:
        metrics[Metric.ROC_AUC] = auc
    return metrics


def _roc_auc(estimator: Any, holdout: Holdout) -> float | None:
    if not hasattr(estimator, "predict_proba"):
        return None
    probabilities = estimator.predict_proba(holdout.features)
    try:
        if probabilities.shape[1] == 2:
            return float(roc_auc_score(holdout.target, probabilities[:, 1]))
        return float(
            roc_auc_score(
                holdout.target, probabilities, multi_class="ovr", labels=estimator.classes_
            )
        )
    except ValueError:  # the holdout lacks a class: AUC is undefined there
        return None


# --- promotion -------------------------------------------------------------------------


def is_better(metric: str, new: float, old: float) -> bool:
    return new < old if metric in LOWER_IS_BETTER else new > old


def decide(
    policy: str, metric: str, new: dict[str, float], production: dict[str, float] | None
) -> tuple[bool, str]:
    """Whether to promote the new version, and why. `production` None: there is none."""
    if policy == PromotionPolicy.NEVER:
        return False, "policy is never: registered without promotion"
    if policy == PromotionPolicy.ALWAYS:
        return True, "policy is always"
    if production is None:
        return True, "no production version yet: the first trained version goes to production"
    if metric not in new or metric not in production:
        return False, f"{metric} could not be computed on the holdout for both versions"
    new_value, old_value = new[metric], production[metric]
    direction = "lower" if metric in LOWER_IS_BETTER else "higher"
    comparison = f"{metric} {new_value:.4f} vs production {old_value:.4f} ({direction} is better)"
    if is_better(metric, new_value, old_value):
        return True, f"better than production: {comparison}"
    return False, f"not better than production: {comparison}"
