"""Pages outside the API while the database is away: 503 and one warning line."""

import logging

import pytest
from django.db import OperationalError
from django.test import Client

from mlsite import dashboard
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
