"""Calling an estimator once for many rows, and shaping its answers as output rows."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._forest import ForestClassifier
from sklearn.pipeline import Pipeline

from mlsite.errors import DomainError


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
        probabilities = np.asarray(estimator.predict_proba(matrix))
        classes = list(estimator.classes_)
        if _predicts_by_argmax(estimator):
            predictions = np.asarray(estimator.classes_).take(probabilities.argmax(axis=1))
        else:
            predictions = np.asarray(estimator.predict(matrix))
        return Scores(predictions, probabilities, classes)
    except Exception as exc:  # an estimator may raise anything for inputs it cannot take
        raise ScoringFailed(f"the model could not score these rows: {exc}") from exc


def _predicts_by_argmax(estimator: Any) -> bool:
    # For these, scikit-learn's own predict() is classes_.take(argmax(predict_proba)), so
    # deriving it here gives identical labels at half the cost of calling both.
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if isinstance(final, ForestClassifier):
        return getattr(final, "n_outputs_", 1) == 1
    return isinstance(final, HistGradientBoostingClassifier)
