"""Calling an estimator once for many rows, and shaping its answers as output rows."""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._forest import ForestClassifier
from sklearn.pipeline import Pipeline

from mlsite.errors import DomainError

# Up to this many rows a forest is scored tree by tree here (see _forest_probabilities);
# larger inputs (batch chunks) keep scikit-learn's path, which can use the forest's n_jobs.
FOREST_FAST_PATH_ROWS = 5000
# Calls that raise which score_rows splits further, in all; past this the rows left fail
# with the error at hand (a model that refuses every row must not cost a call per row).
MAX_FAILED_CALLS = 64
NOT_FINITE = "the model's answer for this row is not a finite number (an input out of its range?)"

# We pass arrays whose columns are in the schema's order, which check_fits made the order the
# estimator was fitted in, so this warning (twice a batch chunk, for a model fitted on a
# DataFrame) says nothing. Registered once here: a per-call catch_warnings costs every job.
warnings.filterwarnings(
    "ignore", message="X does not have valid feature names, but", category=UserWarning
)


class ScoringFailed(DomainError):
    code = "scoring_failed"
    http_status = 500


class SeveralAnswersARow(ScoringFailed):
    """The model answers several values a row (fitted on several targets): no row can be
    scored, whatever its values, so score_rows does not look for the rows to blame."""


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

    def finite(self) -> np.ndarray:
        """Per row: whether its prediction and probabilities are all finite numbers."""
        finite = np.ones(len(self.predictions), dtype=bool)
        if self.predictions.dtype.kind in "fc":
            finite &= np.isfinite(self.predictions)
        if self.probabilities is not None:
            finite &= np.isfinite(self.probabilities).all(axis=1)
        return finite

    def take(self, rows: np.ndarray) -> "Scores":
        probabilities = None if self.probabilities is None else self.probabilities[rows]
        return Scores(self.predictions[rows], probabilities, self.classes)


@dataclass
class RowScores:
    """The scores of the rows that could be scored, and why each of the others could not."""

    scores: Scores  # one entry per row of `good`
    good: np.ndarray  # positions in the input, ascending
    failures: dict[int, str]  # position in the input: reason

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Output rows for input positions start..stop, all of them good."""
        first = int(np.searchsorted(self.good, start))
        return self.scores.rows(first, first + (stop - start))

    def first_failure(self, start: int, stop: int) -> int | None:
        """The first of input positions start..stop that failed, if any did."""
        if not self.failures:
            return None
        return next((at for at in range(start, stop) if at in self.failures), None)


def score_rows(
    estimator: Any, matrix: np.ndarray, with_probabilities: bool, features: Sequence[str] = ()
) -> RowScores:
    """Score all rows in one call, as score() does; a row the model fails on fails alone.

    A row whose answer is not a finite number (an input too large for the model, say) fails.
    When the call raises, its rows are split in halves and scored again until the rows
    that make it raise are found: one such row among n costs about 2 log2(n) calls more.
    """
    pieces: list[tuple[np.ndarray, Scores]] = []
    failures: dict[int, str] = {}
    failed_calls = 0
    spans = [np.arange(len(matrix))]  # a stack; the left half goes on top, so rows stay in order
    while spans:
        span = spans.pop()
        try:
            rows = matrix if len(span) == len(matrix) else matrix[span]
            scores = score(estimator, rows, with_probabilities, features)
        except ScoringFailed as exc:
            failed_calls += 1
            unscorable = isinstance(exc, SeveralAnswersARow)
            if len(span) == 1 or failed_calls >= MAX_FAILED_CALLS or unscorable:
                failures.update(dict.fromkeys(span.tolist(), str(exc)))
            else:
                half = len(span) // 2
                spans += [span[half:], span[:half]]
            continue
        finite = scores.finite()
        if not finite.all():
            failures.update(dict.fromkeys(span[~finite].tolist(), NOT_FINITE))
            span, scores = span[finite], scores.take(finite)
        if len(span):
            pieces.append((span, scores))
    if not pieces:
        return RowScores(Scores(np.empty(0)), np.empty(0, np.intp), failures)
    if len(pieces) == 1:
        return RowScores(pieces[0][1], pieces[0][0], failures)
    good = np.concatenate([span for span, _ in pieces])
    return RowScores(_joined([scores for _, scores in pieces]), good, failures)


def _joined(parts: list[Scores]) -> Scores:
    predictions = np.concatenate([part.predictions for part in parts])
    if parts[0].probabilities is None:
        return Scores(predictions)
    probabilities = np.concatenate([cast(np.ndarray, part.probabilities) for part in parts])
    return Scores(predictions, probabilities, parts[0].classes)


def predicts_text(estimator: Any) -> bool:
    """Whether the estimator's predictions are text labels ("007" stays "007", not 7)."""
    classes = getattr(estimator, "classes_", None)
    return classes is not None and np.asarray(classes).dtype.kind in "OSU"


def gives_probabilities(estimator: Any) -> bool:
    """Whether a classifier answers probabilities by class (LinearSVC, RidgeClassifier and an
    SVC without probability=True answer only a prediction)."""
    return hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")


def score(
    estimator: Any, matrix: np.ndarray, with_probabilities: bool, features: Sequence[str] = ()
) -> Scores:
    """One predict (and predict_proba) call for all rows; raises ScoringFailed. `features`
    names the matrix's columns (the model's schema order)."""
    try:
        rows = _as_fitted(estimator, matrix, features)
        if not with_probabilities or not gives_probabilities(estimator):
            return Scores(_one_a_row(estimator.predict(rows)))
        if _predicts_by_argmax(estimator):
            probabilities = np.asarray(_predict_proba(estimator, rows))
            predictions = np.asarray(estimator.classes_).take(probabilities.argmax(axis=1))
        else:
            predictions = _one_a_row(estimator.predict(rows))
            probabilities = np.asarray(_predict_proba(estimator, rows))
        return Scores(predictions, probabilities, list(estimator.classes_))
    except SeveralAnswersARow:
        raise
    except Exception as exc:  # an estimator may raise anything for inputs it cannot take
        raise ScoringFailed(f"the model could not score these rows: {exc}") from exc


def _one_a_row(predictions: Any) -> np.ndarray:
    """The predictions as one value a row; raises SeveralAnswersARow. A regressor fitted on a
    one-column target (y as a DataFrame) answers an n-by-1 array: that is one a row."""
    predictions = np.asarray(predictions)
    values = int(np.prod(predictions.shape[1:]))
    if values != 1:
        raise SeveralAnswersARow(
            f"the model answers {values} values a row (it was fitted on several targets); "
            "only a model with one answer a row can be served"
        )
    return predictions.reshape(len(predictions))


def _as_fitted(estimator: Any, matrix: np.ndarray, features: Sequence[str]) -> Any:
    """The rows as the estimator was fitted on them: for one fitted on a DataFrame (it has
    feature_names_in_), a DataFrame with its columns in that order, since a ColumnTransformer
    that picks columns by name takes nothing else; the bare matrix otherwise (cheaper), or
    when its names are not the schema's."""
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None or not features or set(fitted) != set(features):
        return matrix
    return pd.DataFrame(matrix, columns=list(features))[list(fitted)]


def _predict_proba(estimator: Any, matrix: Any) -> np.ndarray:
    if (
        isinstance(estimator, ForestClassifier)
        and getattr(estimator, "n_outputs_", 1) == 1
        and len(matrix) <= FOREST_FAST_PATH_ROWS
    ):
        return _forest_probabilities(estimator, matrix)
    return estimator.predict_proba(matrix)


def _forest_probabilities(forest: ForestClassifier, matrix: Any) -> np.ndarray:
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
