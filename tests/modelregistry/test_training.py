"""Training without a broker: datasets, the estimator allow-list, metrics and the promotion rule."""

import io

import pandas as pd
import pytest
from django.core.files.base import ContentFile

from modelregistry import training, training_runs
from modelregistry.models import (
    BuiltinDataset,
    Dataset,
    Estimator,
    Metric,
    PromotionPolicy,
    RunStatus,
    RunTrigger,
    TaskKind,
    TrainingRun,
    TrainingSpec,
)
from tests.builders import make_model


def make_spec(
    model_name: str = "iris",
    builtin: str = BuiltinDataset.IRIS,
    estimator: str = Estimator.LOGISTIC_REGRESSION,
    metric: str = Metric.ACCURACY,
    **fields: object,
) -> TrainingSpec:
    kind = TaskKind.REGRESSION if builtin == BuiltinDataset.DIABETES else TaskKind.CLASSIFICATION
    model = make_model(model_name, kind, input_schema=[])
    dataset, _ = Dataset.objects.get_or_create(name=f"{builtin}-builtin", builtin=builtin)
    return TrainingSpec.objects.create(
        name=f"{model_name}-{estimator}",
        registered_model=model,
        dataset=dataset,
        estimator=estimator,
        primary_metric=metric,
        **fields,
    )


def test_builtin_column_names_become_schema_names() -> None:
    assert training.feature_name("sepal length (cm)") == "sepal_length"
    assert training.feature_name("mean concave points") == "mean_concave_points"


@pytest.mark.django_db
def test_a_builtin_dataset_loads_with_schema_friendly_features() -> None:
    features, target = training.load_dataset(Dataset(name="iris", builtin=BuiltinDataset.IRIS))
    assert list(features.columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert len(features) == len(target) == 150


@pytest.mark.django_db
def test_an_uploaded_csv_trains_on_its_named_target_column() -> None:
    frame = pd.DataFrame({"a": range(40), "b": [i % 7 for i in range(40)]})
    frame["y"] = frame["a"] * 2 + frame["b"]
    dataset = Dataset.objects.create(
        name="linear",
        file=ContentFile(frame.to_csv(index=False).encode(), "l.csv"),
        target_column="y",
    )
    model = make_model("linear", TaskKind.REGRESSION, input_schema=[])
    spec = TrainingSpec.objects.create(
        name="linear-ridge",
        registered_model=model,
        dataset=dataset,
        estimator=Estimator.RIDGE,
        primary_metric=Metric.R2,
    )
    trained = training.train(spec)
    assert trained.feature_names == ["a", "b"]
    assert trained.metrics[Metric.R2] > 0.99


@pytest.mark.django_db
def test_a_metric_undefined_on_a_one_row_holdout_is_left_out_and_the_run_succeeds(
    private_artifacts,
) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 5.0], "y": [2.0, 4.1, 5.9, 8.2, 9.9]})
    dataset = Dataset.objects.create(
        name="five-rows",
        file=ContentFile(frame.to_csv(index=False).encode(), "five.csv"),
        target_column="y",
    )
    spec = TrainingSpec.objects.create(
        name="five-rows-ridge",
        registered_model=make_model("five-rows", TaskKind.REGRESSION, input_schema=[]),
        dataset=dataset,
        estimator=Estimator.RIDGE,
        primary_metric=Metric.R2,
    )
    run = TrainingRun.objects.create(spec=spec, trigger=RunTrigger.ADMIN)
    assert training_runs.claim(run)

    run = training_runs.execute(run)  # R² of one row is NaN, which no JSON column stores

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert set(run.metrics) == {"rmse", "mae"}
    assert run.version.metrics == run.metrics


@pytest.mark.django_db
def test_a_csv_with_a_header_and_no_rows_is_refused_as_having_no_rows(
    private_artifacts,
) -> None:
    dataset = Dataset.objects.create(
        name="empty", file=ContentFile(b"a,b,y\n", "empty.csv"), target_column="y"
    )
    with pytest.raises(training.BadDataset) as refused:
        training.load_dataset(dataset)
    assert str(refused.value) == "dataset 'empty' has no rows, only a header; 4 or more needed"


def test_a_parquet_file_without_the_target_column_is_refused() -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(buffer)
    buffer.seek(0)
    with pytest.raises(training.BadDataset, match="no column 'y'"):
        training.check_dataset_file(buffer, "data.parquet", "y")
    assert buffer.tell() == 0  # the upload can still be saved


def test_only_csv_and_parquet_files_are_accepted() -> None:
    with pytest.raises(training.BadDataset, match="only CSV and Parquet"):
        training.check_dataset_file(io.BytesIO(b"a,y\n1,2\n"), "data.xlsx", "y")


def test_unknown_params_are_refused_with_the_allowed_names() -> None:
    with pytest.raises(training.BadSpec, match="unknown params for LogisticRegression: Cee"):
        training.build_estimator(Estimator.LOGISTIC_REGRESSION, {"Cee": 1}, seed=0)


def test_out_of_range_params_are_refused_before_any_fit() -> None:
    with pytest.raises(training.BadSpec, match="'C' parameter of LogisticRegression"):
        training.build_estimator(Estimator.LOGISTIC_REGRESSION, {"C": -1}, seed=0)


def test_the_seed_is_the_default_random_state() -> None:
    forest = training.build_estimator(Estimator.RANDOM_FOREST_CLASSIFIER, {}, seed=7)
    assert forest.random_state == 7


@pytest.mark.django_db
def test_a_regressor_cannot_feed_a_classification_model() -> None:
    spec = make_spec(estimator=Estimator.RIDGE)
    with pytest.raises(training.BadSpec, match="makes regression models"):
        training.check_spec(spec)


@pytest.mark.django_db
def test_a_regression_metric_cannot_rank_a_classifier() -> None:
    spec = make_spec(metric=Metric.RMSE)
    with pytest.raises(training.BadSpec, match="'rmse' is not a classification metric"):
        training.check_spec(spec)


@pytest.mark.django_db
def test_classifiers_are_scored_on_accuracy_f1_and_roc_auc() -> None:
    trained = training.train(make_spec(params={"max_iter": 500}))
    assert set(trained.metrics) == {"accuracy", "f1", "roc_auc"}
    assert trained.metrics["accuracy"] > 0.85
    assert len(trained.holdout.target) == 30  # 20 % of 150


@pytest.mark.django_db
def test_regressors_are_scored_on_rmse_mae_and_r2() -> None:
    spec = make_spec("diabetes", BuiltinDataset.DIABETES, Estimator.RIDGE, Metric.RMSE)
    trained = training.train(spec)
    assert set(trained.metrics) == {"rmse", "mae", "r2"}
    assert trained.metrics["rmse"] > trained.metrics["mae"] > 0


@pytest.mark.django_db
def test_the_same_seed_gives_the_same_holdout_and_metrics() -> None:
    spec = make_spec(estimator=Estimator.RANDOM_FOREST_CLASSIFIER, params={"n_estimators": 5})
    first, second = training.train(spec), training.train(spec)
    assert (first.holdout.target == second.holdout.target).all()
    assert first.metrics == second.metrics


@pytest.mark.django_db
def test_a_dataset_missing_the_model_features_is_refused() -> None:
    spec = make_spec()
    spec.registered_model.input_schema = [{"name": "petal_colour", "type": "number"}]
    with pytest.raises(training.BadDataset, match="lacks features of model 'iris': petal_colour"):
        training.train(spec)


@pytest.mark.parametrize(
    ("policy", "metric", "new", "old", "promoted"),
    [
        (PromotionPolicy.IF_BETTER, Metric.ACCURACY, 0.9, 0.8, True),
        (PromotionPolicy.IF_BETTER, Metric.ACCURACY, 0.8, 0.8, False),
        (PromotionPolicy.IF_BETTER, Metric.RMSE, 40.0, 50.0, True),
        (PromotionPolicy.IF_BETTER, Metric.MAE, 60.0, 50.0, False),
        (PromotionPolicy.NEVER, Metric.ACCURACY, 1.0, 0.1, False),
        (PromotionPolicy.ALWAYS, Metric.ACCURACY, 0.1, 1.0, True),
    ],
)
def test_the_promotion_policy_decides(
    policy: str, metric: str, new: float, old: float, promoted: bool
) -> None:
    decision, reason = training.decide(policy, metric, {metric: new}, {metric: old})
    assert decision is promoted
    assert reason


def test_the_first_trained_version_is_promoted_when_there_is_no_production() -> None:
    promoted, reason = training.decide(PromotionPolicy.IF_BETTER, Metric.F1, {"f1": 0.2}, None)
    assert promoted
    assert "no production version" in reason
