"""Scoring: a forest scored tree by tree gives exactly scikit-learn's probabilities, faster."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsRegressor

from predictions import scoring
from tests import processes


def _data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=600, n_features=6, n_informative=4, n_classes=3, random_state=0
    )


def test_a_forest_gives_bit_identical_probabilities_and_labels_to_scikit_learn() -> None:
    features, labels = _data()
    for forest in (
        RandomForestClassifier(n_estimators=15, random_state=0),
        ExtraTreesClassifier(n_estimators=15, random_state=0),
    ):
        forest.fit(features, labels)
        for rows in (features[:1], features[:37], features):
            scores = scoring.score(forest, rows, with_probabilities=True)
            assert np.array_equal(scores.probabilities, forest.predict_proba(rows))
            assert np.array_equal(scores.predictions, forest.predict(rows))


def test_string_labels_come_back_as_the_forest_predicts_them() -> None:
    features, labels = _data()
    names = np.array(["low", "mid", "high"])[labels]
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, names)

    scores = scoring.score(forest, features[:20], with_probabilities=True)

    assert scores.predictions.tolist() == forest.predict(features[:20]).tolist()
    assert scores.rows(0, 1)[0]["probabilities"].keys() == {"high", "low", "mid"}


def test_a_row_the_forest_cannot_take_fails_as_scoring_failed() -> None:
    features, labels = _data()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels)
    with pytest.raises(scoring.ScoringFailed, match="could not score"):
        scoring.score(forest, features[:3, :4], with_probabilities=True)


def test_a_row_whose_answer_is_not_a_finite_number_fails_alone() -> None:
    features, labels = _data()
    model = LogisticRegression(max_iter=500).fit(features, labels)
    rows = features[:5].copy()
    rows[2] = 1.7e308  # finite, but the model's answer for it is NaN

    scored = scoring.score_rows(model, rows, with_probabilities=True)

    assert list(scored.failures) == [2]
    assert "not a finite number" in scored.failures[2]
    assert scored.good.tolist() == [0, 1, 3, 4]
    assert np.array_equal(scored.scores.probabilities, model.predict_proba(rows[[0, 1, 3, 4]]))
    assert [row["prediction"] for row in scored.rows(3, 5)] == model.predict(rows[3:]).tolist()


def test_rows_that_make_the_model_raise_are_found_and_fail_alone() -> None:
    features, labels = _data()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels)
    rows = features[:40].copy()
    rows[[5, 31]] = 1e39  # too large for the trees' float32: the whole call raises

    scored = scoring.score_rows(forest, rows, with_probabilities=True)

    assert sorted(scored.failures) == [5, 31]
    assert "could not score" in scored.failures[5]
    good = [at for at in range(40) if at not in (5, 31)]
    assert scored.good.tolist() == good
    assert np.array_equal(scored.scores.probabilities, forest.predict_proba(rows[good]))
    assert scored.first_failure(0, 5) is None
    assert scored.first_failure(4, 8) == 5


def test_a_model_that_refuses_every_row_is_not_called_once_a_row() -> None:
    class Refuses:
        calls = 0

        def predict(self, matrix: np.ndarray) -> np.ndarray:
            self.calls += 1
            raise ValueError("no")

    model = Refuses()
    scored = scoring.score_rows(model, np.ones((10_000, 3)), with_probabilities=False)

    assert len(scored.failures) == 10_000
    assert len(scored.good) == 0
    assert model.calls <= 2 * scoring.MAX_FAILED_CALLS


def test_a_regressor_fitted_on_a_one_column_target_answers_one_value_a_row() -> None:
    # y given as a one-column DataFrame: nearest neighbours then answer an n-by-1 array.
    features, labels = _data()
    model = KNeighborsRegressor().fit(features, labels.reshape(-1, 1).astype(float))

    scored = scoring.score_rows(model, features[:7], with_probabilities=False)

    assert scored.failures == {}
    assert scored.scores.predictions.tolist() == model.predict(features[:7]).ravel().tolist()
    assert scored.rows(0, 1) == [{"prediction": model.predict(features[:1])[0, 0]}]


# A worker's process as it scores: a model fitted on a DataFrame, given arrays, then a model
# that warns about something else.
SCORE_IN_A_FRESH_PROCESS = """
import warnings

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsRegressor

from predictions import scoring

class Grumbling:
    def predict(self, matrix):
        warnings.warn("X has a feature the model never saw vary", UserWarning)
        return np.zeros(len(matrix))

data = load_iris(as_frame=True)
model = LogisticRegression(max_iter=500).fit(data.data, data.target)
scored = scoring.score_rows(model, data.data.to_numpy()[:5], with_probabilities=True)
scoring.score_rows(Grumbling(), np.zeros((2, 4)), with_probabilities=False)
print(scored.scores.predictions.tolist())
"""


def test_a_model_fitted_with_feature_names_scores_arrays_without_a_warning() -> None:
    done = processes.run_python(["-c", SCORE_IN_A_FRESH_PROCESS], processes.process_env())

    assert (done.returncode, done.stdout) == (0, "[0, 0, 0, 0, 0]\n"), done.stderr
    assert "valid feature names" not in done.stderr
    assert "X has a feature the model never saw vary" in done.stderr  # other warnings stay
