"""The demo seed: three models in production with holdout metrics, and a rerun changes nothing."""

import pandas as pd
import pytest
from django.core.management import call_command

from modelregistry import loader, versions
from modelregistry.models import ModelVersion, Stage
from tests.builders import IRIS_FEATURES, iris_rows


@pytest.mark.django_db
def test_the_demo_registers_three_models_in_production_once(private_artifacts) -> None:
    call_command("seed_demo")
    production = {
        v.registered_model.name: v for v in ModelVersion.objects.filter(stage=Stage.PRODUCTION)
    }
    assert sorted(production) == ["diabetes", "iris", "wine"]
    assert production["iris"].registered_model.feature_names == IRIS_FEATURES
    assert production["iris"].metrics["accuracy"] > 0.9
    assert production["wine"].metrics["f1"] > 0.9
    assert set(production["diabetes"].metrics) == {"rmse", "mae", "r2"}
    assert production["diabetes"].registered_model.task_kind == "regression"
    call_command("seed_demo")
    assert ModelVersion.objects.count() == 3


@pytest.mark.django_db
def test_the_demo_iris_model_predicts_species_from_named_features(private_artifacts) -> None:
    call_command("seed_demo")
    version = versions.resolve("iris")
    rows = iris_rows(3, offset=100)  # virginica
    estimator = loader.load(version)
    features = version.registered_model.feature_names
    assert list(estimator.predict(_frame(rows, features))) == [2, 2, 2]


def _frame(rows: list[dict[str, float]], features: list[str]) -> pd.DataFrame:
    return pd.DataFrame([[row[f] for f in features] for row in rows], columns=features)
