"""References resolve to exactly one version, or to a clear error."""

import pytest

from modelregistry import versions
from modelregistry.models import Stage
from tests.builders import make_version


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
