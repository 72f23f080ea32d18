"""References resolve to exactly one version, or to a clear error."""

import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelregistry import versions
from modelregistry.models import RegisteredModel, Stage, TaskKind
from tests.builders import IRIS_FEATURES, artifact_bytes, iris_estimator, make_model, make_version


@pytest.mark.django_db
def test_references_resolve_by_stage_and_number() -> None:
    first = make_version("iris", stage=Stage.PRODUCTION)
    second = make_version("iris", stage=Stage.STAGING)
    assert versions.resolve("iris") == first
    assert versions.resolve("iris@production") == first
    assert versions.resolve("iris@staging") == second
    assert versions.resolve("iris:2") == second


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nope", "no model named 'nope'"),
        ("iris:9", "has no version 9"),
        ("iris@staging", "has no staging version"),
        ("iris@tuesday", "is not a model reference"),
    ],
)
def test_unknown_references_raise_a_clear_error(ref: str, message: str) -> None:
    make_version("iris", stage=Stage.PRODUCTION)
    with pytest.raises(versions.UnknownModel, match=message):
        versions.resolve(ref)


def named_estimator() -> LogisticRegression:
    data = load_iris()
    return LogisticRegression(max_iter=500).fit(
        pd.DataFrame(data.data, columns=IRIS_FEATURES), data.target
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("estimator", "features"),
    [(iris_estimator, ["x0", "x1", "x2", "x3"]), (named_estimator, IRIS_FEATURES)],
)
def test_the_first_upload_sets_an_empty_schema_as_it_does_for_a_new_model(
    private_artifacts, estimator, features: list[str]
) -> None:
    RegisteredModel.objects.create(name="manual4", task_kind=TaskKind.CLASSIFICATION)
    version = versions.upload("manual4", artifact_bytes(estimator()))
    assert version.registered_model.feature_names == features
    assert RegisteredModel.objects.get(name="manual4").feature_names == features
    assert versions.upload("fresh", artifact_bytes(estimator())).registered_model.feature_names == (
        features
    )


@pytest.mark.django_db
def test_an_upload_to_a_model_with_a_schema_must_still_fit_it(private_artifacts) -> None:
    make_model("manual", TaskKind.CLASSIFICATION)  # ten features
    with pytest.raises(versions.FeatureMismatch, match="takes 4 features, but manual's schema"):
        versions.upload("manual", artifact_bytes(iris_estimator()))
    assert RegisteredModel.objects.get(name="manual").feature_names == [f"x{i}" for i in range(10)]


@pytest.mark.django_db
def test_a_version_registered_in_code_is_held_to_the_same_metric_limits(settings) -> None:
    settings.MAX_METRICS = 2
    model = make_model("iris")
    with pytest.raises(versions.BadMetrics, match="at most 2 metrics"):
        versions.register_estimator(model, iris_estimator(), metrics={"a": 1, "b": 2, "c": 3})
    assert not model.versions.exists()


@pytest.mark.django_db
def test_an_upload_meant_for_a_new_model_is_refused_when_the_name_exists(
    private_artifacts,
) -> None:
    make_version("iris")
    with pytest.raises(versions.ModelExists, match="'iris' exists already"):
        versions.upload("iris", artifact_bytes(iris_estimator()), new_model=True)
    assert RegisteredModel.objects.get(name="iris").versions.count() == 1


@pytest.mark.django_db
def test_an_estimator_whose_feature_names_no_schema_may_have_is_refused(
    private_artifacts,
) -> None:
    # CSV header names are stripped, so " sepal_length" could never be a file's column: a
    # schema taken from such an estimator made its model take JSON rows but refuse every CSV.
    data = load_iris()
    columns = [" sepal_length", *IRIS_FEATURES[1:]]
    estimator = LogisticRegression(max_iter=500).fit(
        pd.DataFrame(data.data, columns=columns), data.target
    )
    RegisteredModel.objects.create(name="manual4", task_kind=TaskKind.CLASSIFICATION)

    for name in ("fresh", "manual4"):
        with pytest.raises(versions.FeatureMismatch, match="starts or ends with a space"):
            versions.upload(name, artifact_bytes(estimator))

    assert not RegisteredModel.objects.filter(name="fresh").exists()
    assert RegisteredModel.objects.get(name="manual4").input_schema == []
