"""Submitting: a request that lost an idempotency race answers with the winner's job."""

import pytest

from predictions import submission
from predictions.models import PredictionJob
from tests.base import make_user
from tests.builders import iris_rows, make_version


def lose_the_race(monkeypatch) -> None:
    """The next submission looks for its key before the winner's row exists."""
    looked_up = submission._existing
    calls: list[str] = []

    def not_there_yet(owner, key):
        calls.append(key)
        return None if len(calls) == 1 else looked_up(owner, key)

    monkeypatch.setattr(submission, "_existing", not_there_yet)


@pytest.mark.parametrize(
    "db_mode",
    [
        pytest.param("autocommit", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("inside a transaction", marks=pytest.mark.django_db),
    ],
)
def test_a_lost_idempotency_race_returns_the_first_job(monkeypatch, db_mode) -> None:
    make_version()
    owner = make_user(f"racer-{db_mode[:4]}")
    first, created = submission.submit_rows(owner, "iris", iris_rows(1), idempotency_key="k")

    lose_the_race(monkeypatch)
    second, created_again = submission.submit_rows(owner, "iris", iris_rows(1), idempotency_key="k")

    assert (second.pk, created, created_again) == (first.pk, True, False)
    assert PredictionJob.objects.filter(owner=owner).count() == 1
