"""Pages outside the API while the database is away: 503 and one warning line."""

import logging

import pytest
from django.db import OperationalError
from django.test import Client

from mlsite import dashboard
from predictions.models import PredictionJob
from tests.base import make_user

pytestmark = pytest.mark.django_db


def test_an_admin_page_whose_database_is_away_answers_503_with_one_warning(
    client: Client, monkeypatch, caplog
) -> None:
    # The admin and /metrics answered 500 with a long traceback per request for the whole
    # outage, where the API answered 503 database_unavailable.
    client.force_login(make_user("ops", staff=True, is_superuser=True))

    def refused() -> dict:
        raise OperationalError('database "mlsite" is not currently accepting connections')

    monkeypatch.setattr(dashboard, "jobs_per_status", refused)
    answer = client.get("/admin/dashboard/")
    assert (answer.status_code, answer["Retry-After"]) == (503, "5")
    [warning] = [record for record in caplog.records if record.name == "mlsite.unavailable"]
    assert (warning.levelno, warning.exc_info) == (logging.WARNING, None)
    assert "not currently accepting connections" in warning.getMessage()


@pytest.mark.parametrize("path", ["/admin/dashboard/", "/api/v1/jobs/"])
def test_a_database_without_its_tables_is_a_server_error_not_an_outage(
    client: Client, monkeypatch, path: str
) -> None:
    # SQLite says "no such table" with OperationalError too: a release whose migrations were
    # not applied answered 503 "try again shortly", with one line in the log, for ever.
    client.force_login(make_user("ops", staff=True, is_superuser=True))

    def unmigrated(*args: object, **kwargs: object) -> dict:
        raise OperationalError("no such table: predictions_predictionjob")

    monkeypatch.setattr(dashboard, "jobs_per_status", unmigrated)
    monkeypatch.setattr(PredictionJob.objects, "select_related", unmigrated)
    client.raise_request_exception = False
    assert client.get(path).status_code == 500
