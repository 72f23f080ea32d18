"""Stage changes: one production version per model, an audit trail, and rollback."""

import threading

import pytest
from django.db import connection

from modelregistry import versions
from modelregistry.models import ModelVersion, Stage, StageChange
from tests.base import staff
from tests.builders import make_version


def history(version: ModelVersion) -> list[tuple[str, str, str]]:
    changes = version.stage_changes.order_by("changed_at", "id")
    return [(change.from_stage, change.to_stage, change.note) for change in changes]


@pytest.mark.django_db
def test_promoting_to_production_archives_the_previous_one_and_records_both() -> None:
    first = make_version("iris", stage=Stage.PRODUCTION)
    second = make_version("iris", stage=Stage.STAGING)
    user = staff()
    promoted = versions.promote(second, Stage.PRODUCTION, user=user, note="better f1")
    first.refresh_from_db()
    assert (promoted.stage, first.stage) == (Stage.PRODUCTION, Stage.ARCHIVED)
    assert versions.resolve("iris") == second
    assert history(second) == [("staging", "production", "better f1")]
    assert history(first) == [("production", "archived", "replaced by version 2")]
    assert {change.changed_by for change in StageChange.objects.all()} == {user}


@pytest.mark.django_db
def test_promoting_to_the_current_stage_changes_nothing() -> None:
    version = make_version("iris", stage=Stage.PRODUCTION)
    versions.promote(version, Stage.PRODUCTION)
    assert StageChange.objects.count() == 0


@pytest.mark.django_db
def test_demote_and_archive_move_a_version_out_of_production() -> None:
    version = make_version("iris", stage=Stage.PRODUCTION)
    versions.promote(version, Stage.STAGING)
    assert versions.resolve("iris@staging") == version
    with pytest.raises(versions.UnknownModel, match="has no production version"):
        versions.resolve("iris")
    versions.promote(version, Stage.ARCHIVED)
    assert history(version) == [("production", "staging", ""), ("staging", "archived", "")]


@pytest.mark.django_db
def test_an_unusable_version_cannot_go_to_production() -> None:
    version = make_version("iris", stage=Stage.STAGING)
    ModelVersion.objects.filter(pk=version.pk).update(is_usable=False, unusable_reason="bad hash")
    with pytest.raises(versions.StageConflict, match="unusable"):
        versions.promote(version, Stage.PRODUCTION)


@pytest.mark.django_db
def test_rollback_restores_the_previous_production_version() -> None:
    first = make_version("iris", stage=Stage.NONE)
    second = make_version("iris", stage=Stage.NONE)
    third = make_version("iris", stage=Stage.NONE)
    for version in (first, second, third):
        versions.promote(version, Stage.PRODUCTION)
    restored = versions.rollback(first.registered_model, note="v3 is off")
    assert restored == second
    assert versions.resolve("iris") == second
    third.refresh_from_db()
    assert third.stage == Stage.ARCHIVED
    assert history(second)[-1] == ("archived", "production", "v3 is off")
    # Rolling back again steps further back, not to the version just replaced.
    assert versions.rollback(first.registered_model) == first
    assert versions.resolve("iris") == first


@pytest.mark.django_db
def test_rollback_without_an_earlier_production_version_is_a_clear_error() -> None:
    version = make_version("iris", stage=Stage.NONE)
    versions.promote(version, Stage.PRODUCTION)
    with pytest.raises(versions.StageConflict, match="no earlier production version"):
        versions.rollback(version.registered_model)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_promotions_leave_exactly_one_production_version() -> None:
    make_version("iris", stage=Stage.PRODUCTION)
    for _ in range(5):
        contenders = [make_version("iris", stage=Stage.NONE) for _ in range(2)]
        errors = promote_at_once(contenders)
        assert errors == []
        production = ModelVersion.objects.filter(stage=Stage.PRODUCTION)
        assert production.count() == 1
        assert production.get() in contenders
        for version in contenders:  # both promotions happened, one after the other
            assert ("none", "production", "race") in history(version)
    model = production.get().registered_model
    assert model.versions.filter(stage=Stage.ARCHIVED).count() == model.versions.count() - 1


def promote_at_once(contenders: list[ModelVersion]) -> list[Exception]:
    barrier = threading.Barrier(len(contenders))
    errors: list[Exception] = []

    def promote(version: ModelVersion) -> None:
        try:
            barrier.wait(timeout=10)
            versions.promote(version, Stage.PRODUCTION, note="race")
        except Exception as exc:  # collected and asserted on by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=promote, args=(v,)) for v in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors
