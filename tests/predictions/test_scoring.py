"""Scoring: a forest scored tree by tree gives exactly scikit-learn's probabilities, faster."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from predictions import scoring


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
