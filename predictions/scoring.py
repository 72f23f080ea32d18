"""Calling an estimator once for many rows, and shaping its answers as output rows."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._forest import ForestClassifier
from sklearn.pipeline import Pipeline

from mlsite.errors import DomainError

# Up to this many rows a forest is scored tree by tree here (see _forest_probabilities);
# larger inputs (batch chunks) keep scikit-learn's path, which can use the forest's n_jobs.
FOREST_FAST_PATH_ROWS = 5000


class ScoringFailed(DomainError):
    code = "scoring_failed"
    http_status = 500


@dataclass
class Scores:
    """Predictions for n rows and, for classifiers, an n-by-classes probability matrix."""

    predictions: np.ndarray
    probabilities: np.ndarray | None = None
    classes: list[Any] | None = None

    def rows(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        predictions = self.predictions[start:stop].tolist()
        if self.probabilities is None or self.classes is None:
            return [{"prediction": value} for value in predictions]
        labels = [str(label) for label in self.classes]
        probabilities = self.probabilities[start:stop].tolist()
        return [
            {"prediction": value, "probabilities": dict(zip(labels, row, strict=True))}
            for value, row in zip(predictions, probabilities, strict=True)
        ]


def score(estimator: Any, matrix: np.ndarray, with_probabilities: bool) -> Scores:
    """One predict (and predict_proba) call for all rows; raises ScoringFailed."""
    try:
        if not with_probabilities or not hasattr(estimator, "predict_proba"):
            return Scores(np.asarray(estimator.predict(matrix)))
        probabilities = np.asarray(_predict_proba(estimator, matrix))
        classes = list(estimator.classes_)
        if _predicts_by_argmax(estimator):
            predictions = np.asarray(estimator.classes_).take(probabilities.argmax(axis=1))
        else:
            predictions = np.asarray(estimator.predict(matrix))
        return Scores(predictions, probabilities, classes)
    except Exception as exc:  # an estimator may raise anything for inputs it cannot take
        raise ScoringFailed(f"the model could not score these rows: {exc}") from exc


def _predict_proba(estimator: Any, matrix: np.ndarray) -> np.ndarray:
    if (
        isinstance(estimator, ForestClassifier)
        and getattr(estimator, "n_outputs_", 1) == 1
        and len(matrix) <= FOREST_FAST_PATH_ROWS
    ):
        return _forest_probabilities(estimator, matrix)
    return estimator.predict_proba(matrix)


def _forest_probabilities(forest: ForestClassifier, matrix: np.ndarray) -> np.ndarray:
    # scikit-learn sends every tree through joblib even with n_jobs=None, and that wrapping
    # (config and warnings contexts, fitted checks per tree) costs ~80 µs a tree: 8 ms for
    # 100 trees however few the rows, most of a micro-batch's time (bench/, issue 7). Inputs
    # are checked once for the forest; then the same sums in the same order as its
    # sequential path (tree_.predict is what each tree's predict_proba returns), so the
    # probabilities are bit-identical.
    features = forest._validate_X_predict(matrix)
    classes = forest.n_classes_
    total = np.zeros((features.shape[0], classes), dtype=np.float64)
    for tree in forest.estimators_:
        total += tree.tree_.predict(features)[:, :classes]
    total /= len(forest.estimators_)
    return total


def _predicts_by_argmax(estimator: Any) -> bool:
    # For these, scikit-learn's own predict() is classes_.take(argmax(predict_proba)), so
    # deriving it here gives identical labels at half the cost of calling both.
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if isinstance(final, ForestClassifier):
        return getattr(final, "n_outputs_", 1) == 1
    return isinstance(final, HistGradientBoostingClassifier)
