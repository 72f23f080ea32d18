"""Schedules: the linked beat PeriodicTask, its next runs, and a real beat process driving runs."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from modelregistry import scheduling
from modelregistry.models import RunStatus, RunTrigger, TrainingRun, TrainingSpec
from tests.base import make_user
from tests.builders import make_training_spec
from tests.processes import start_beat, stop, wait_for

JANUARY_NOON = datetime(2027, 1, 14, 12, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_scheduling_a_spec_creates_a_nightly_beat_task_that_names_it() -> None:
    spec = make_training_spec(timezone="Europe/Paris")

    task = scheduling.ensure_schedule(spec)

    assert task.task == "modelregistry.tasks.retrain"
    assert json.loads(task.kwargs) == {"spec_id": spec.pk, "trigger": "schedule"}
    assert (task.crontab.hour, task.crontab.minute, str(task.crontab.timezone)) == (
        "2",
        "0",
        "Europe/Paris",
    )
    spec.refresh_from_db()
    assert spec.periodic_task == task
    assert scheduling.ensure_schedule(spec) == task  # opened, not created twice
    assert PeriodicTask.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("deleted_from", ["the spec's page", "the model's page"])
def test_deleting_a_scheduled_spec_deletes_its_beat_task(deleted_from) -> None:
    spec = make_training_spec()
    scheduling.ensure_schedule(spec)
    other = make_training_spec("iris2-nightly", model="iris2")
    kept = scheduling.ensure_schedule(other)
    client = Client()
    client.force_login(make_user("root", staff=True, is_superuser=True))
    page = {
        "the spec's page": f"trainingspec/{spec.pk}/delete/",
        "the model's page": f"registeredmodel/{spec.registered_model_id}/delete/",
    }[deleted_from]

    assert client.post(f"/admin/modelregistry/{page}", {"post": "yes"}).status_code == 302

    assert list(PeriodicTask.objects.filter(task=scheduling.RETRAIN_TASK)) == [kept]


@pytest.mark.django_db
def test_scheduling_a_spec_named_as_a_renamed_one_leaves_the_renamed_ones_beat_task() -> None:
    renamed = make_training_spec("iris-nightly")
    kept = scheduling.ensure_schedule(renamed)  # "Retrain iris-nightly"
    TrainingSpec.objects.filter(pk=renamed.pk).update(name="iris-nightly-2026")
    spec = make_training_spec("iris-nightly", model="iris2")
    client = Client()
    client.force_login(make_user("root", staff=True, is_superuser=True))

    answer = client.post(f"/admin/modelregistry/trainingspec/{spec.pk}/schedule/")

    spec.refresh_from_db()
    assert answer.status_code == 302
    assert answer.url == f"/admin/django_celery_beat/periodictask/{spec.periodic_task_id}/change/"
    assert spec.periodic_task != kept
    assert json.loads(spec.periodic_task.kwargs)["spec_id"] == spec.pk
    kept.refresh_from_db()
    assert json.loads(kept.kwargs)["spec_id"] == renamed.pk  # still runs the renamed spec
    assert TrainingSpec.objects.get(pk=renamed.pk).periodic_task == kept


@pytest.mark.django_db
def test_next_runs_are_shown_in_the_spec_time_zone() -> None:
    spec = make_training_spec(timezone="America/New_York")
    scheduling.ensure_schedule(spec)
    crontab = spec.periodic_task.crontab
    crontab.timezone = "Europe/Paris"
    crontab.save()

    times = scheduling.next_run_times(spec, count=3, now=JANUARY_NOON)

    # 02:00 in Paris (UTC+1 in winter) is 20:00 the evening before in New York (UTC-5).
    assert [at.isoformat() for at in times] == [
        "2027-01-14T20:00:00-05:00",
        "2027-01-15T20:00:00-05:00",
        "2027-01-16T20:00:00-05:00",
    ]


@pytest.mark.django_db
def test_a_weekday_crontab_skips_the_weekend() -> None:
    crontab = CrontabSchedule(minute="30", hour="6", day_of_week="1-5", timezone="UTC")

    times = scheduling.crontab_times(crontab, JANUARY_NOON, count=3)  # a Thursday

    assert [at.strftime("%a %H:%M") for at in times] == ["Fri 06:30", "Mon 06:30", "Tue 06:30"]


@pytest.mark.django_db
def test_the_night_clocks_go_forward_the_runs_are_shown_when_beat_runs_them() -> None:
    spec = make_training_spec(timezone="Europe/Paris")
    scheduling.ensure_schedule(spec)  # 02:00, which 28 March 2027 skips: beat runs at 03:00
    saturday_noon = datetime(2027, 3, 27, 11, 0, tzinfo=UTC)
    hourly = CrontabSchedule(minute="30", hour="*", timezone="Europe/Paris")

    nightly = scheduling.next_run_times(spec, count=2, now=saturday_noon)
    night = scheduling.crontab_times(hourly, datetime(2027, 3, 28, 0, 0, tzinfo=UTC), count=3)

    shown = "%a %H:%M %Z"
    assert [at.strftime(shown) for at in nightly] == ["Sun 03:00 CEST", "Mon 02:00 CEST"]
    assert [at.strftime(shown) for at in night] == [
        "Sun 01:30 CET",
        "Sun 03:30 CEST",
        "Sun 04:30 CEST",
    ]


@pytest.mark.django_db
def test_an_interval_runs_again_one_interval_after_the_last_run() -> None:
    spec = make_training_spec()
    task = scheduling.ensure_schedule(spec, every_seconds=3600)
    task.last_run_at = JANUARY_NOON - timedelta(minutes=10)
    task.save()

    times = scheduling.next_run_times(spec, count=2, now=JANUARY_NOON)

    assert times == [JANUARY_NOON + timedelta(minutes=50), JANUARY_NOON + timedelta(minutes=110)]


@pytest.mark.django_db
def test_a_disabled_schedule_plans_nothing() -> None:
    spec = make_training_spec()
    task = scheduling.ensure_schedule(spec)
    task.enabled = False
    task.save()

    assert scheduling.next_run_times(spec, now=JANUARY_NOON) == []
    assert scheduling.describe(task).endswith("(disabled)")


@pytest.mark.django_db
def test_a_bad_time_zone_is_refused() -> None:
    with pytest.raises(scheduling.BadTimeZone, match="'Mars/Olympus' is not a time zone"):
        scheduling.ensure_schedule(make_training_spec(timezone="Mars/Olympus"))


@pytest.mark.django_db(transaction=True)
def test_a_one_second_periodic_task_makes_a_real_beat_trigger_runs(live_worker) -> None:
    spec = make_training_spec(params={"max_iter": 500})
    scheduling.ensure_schedule(spec, every_seconds=1)

    def scheduled_successes() -> int:
        return TrainingRun.objects.filter(
            spec=spec, trigger=RunTrigger.SCHEDULE, status=RunStatus.SUCCEEDED
        ).count()

    beat = start_beat()
    try:
        wait_for(lambda: scheduled_successes() >= 2, 40, "two scheduled runs")
    finally:
        stop(beat)

    first, second = TrainingRun.objects.filter(spec=spec, status=RunStatus.SUCCEEDED).order_by(
        "created_at"
    )[:2]
    assert first.promoted  # nothing in production yet
    assert not second.promoted  # same data, same seed: equal, so not better
    assert second.promotion_reason.startswith("not better than production")
    failed = TrainingRun.objects.filter(spec=spec, status=RunStatus.FAILED)
    assert all("in progress" in run.error for run in failed)  # only ever refused overlaps
