"""Beat's scheduler: django-celery-beat's, kept running through a database outage."""

from datetime import datetime, timedelta

import pytest
from django.db import ProgrammingError
from django_celery_beat.schedulers import SCHEDULE_SYNC_MAX_INTERVAL

from mlsite.celery import app
from mlsite.scheduler import HeartbeatScheduler
from tests.outages import fails_at_call

pytestmark = pytest.mark.django_db(transaction=True)  # beat commits as it reads


def test_a_full_sync_while_the_database_is_away_keeps_the_schedule(monkeypatch) -> None:
    # Every 5 minutes beat reads its whole schedule again, outside django-celery-beat's own
    # error handling: an outage at that moment ended beat, and with it the reconciler.
    scheduler = HeartbeatScheduler(app=app)
    before = set(scheduler.schedule)
    assert "reconcile-prediction-jobs" in before
    monkeypatch.setattr(scheduler, "enabled_models", fails_at_call(scheduler.enabled_models))
    ago = timedelta(seconds=SCHEDULE_SYNC_MAX_INTERVAL + 1)
    scheduler._last_full_sync = datetime.now() - ago  # a full sync is due
    assert set(scheduler.schedule) == before


def test_a_schema_beat_cannot_read_still_stops_beat(monkeypatch) -> None:
    # Beat's tables not migrated after an upgrade: a fault to show, not a schedule to keep
    # (warning every 5 minutes, for ever, with the schedule of before).
    scheduler = HeartbeatScheduler(app=app)

    def unmigrated() -> None:
        raise ProgrammingError('column "expire_seconds" does not exist')

    monkeypatch.setattr(scheduler, "enabled_models", unmigrated)
    scheduler._last_full_sync = datetime.now() - timedelta(seconds=SCHEDULE_SYNC_MAX_INTERVAL + 1)
    with pytest.raises(ProgrammingError):
        scheduler.schedule  # noqa: B018 - reading it runs the full sync
