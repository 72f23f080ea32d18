"""A spec's schedule: the linked django-celery-beat PeriodicTask and its next planned runs."""

import json
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery import schedules
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from mlsite.errors import BadInput

from .models import RunTrigger, TrainingSpec

RETRAIN_TASK = "modelregistry.tasks.retrain"
NIGHTLY = {"minute": "0", "hour": "2"}  # the default a new schedule starts from: 02:00
_DAYS_SEARCHED = 4 * 366 + 1  # long enough for a rule that only matches on 29 February


class BadTimeZone(BadInput):
    code = "bad_time_zone"


def zone_of(name: str) -> ZoneInfo:
    """The named IANA time zone. Raises BadTimeZone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        message = f"{name!r} is not a time zone (e.g. Europe/Paris)"
        raise BadTimeZone(message, field="timezone") from None


def retrain_kwargs(spec: TrainingSpec) -> str:
    return json.dumps({"spec_id": spec.pk, "trigger": RunTrigger.SCHEDULE})


def ensure_schedule(spec: TrainingSpec, *, every_seconds: int | None = None) -> PeriodicTask:
    """The spec's PeriodicTask; created when missing, enabled, as a crontab at 02:00 in the
    spec's time zone, or every `every_seconds` seconds when given."""
    if spec.periodic_task is not None:
        return spec.periodic_task
    if every_seconds is not None:
        schedule = {"interval": _interval(every_seconds), "crontab": None}
    else:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            **NIGHTLY,
            day_of_week="*",
            day_of_month="*",
            month_of_year="*",
            timezone=zone_of(spec.timezone),
        )
        schedule = {"crontab": crontab, "interval": None}
    with transaction.atomic():
        # The spec's row is the lock: a second click waits, then opens the task the first made.
        locked = TrainingSpec.objects.select_for_update(of=("self",)).select_related(
            "periodic_task"
        )
        task = locked.get(pk=spec.pk).periodic_task
        if task is None:
            task = PeriodicTask.objects.create(
                name=_free_task_name(spec),
                task=RETRAIN_TASK,
                kwargs=retrain_kwargs(spec),
                enabled=True,
                description=f"Trains spec {spec.name} and promotes per its policy.",
                **schedule,
            )
            TrainingSpec.objects.filter(pk=spec.pk).update(periodic_task=task)
    spec.periodic_task = task
    return task


def _free_task_name(spec: TrainingSpec) -> str:
    """The name "Retrain <spec>", unless a task has it: a renamed spec's (a task keeps its
    name), or one made by hand. Taking that task over re-pointed another spec's schedule."""
    name = f"Retrain {spec.name}"
    if PeriodicTask.objects.filter(name=name).exists():
        return f"{name} (spec {spec.pk})"
    return name


def delete_schedule(instance: TrainingSpec, **kwargs: Any) -> None:
    """A deleted spec's PeriodicTask goes with it (post_delete, connected in apps.py): left
    enabled, beat would send a run of an unknown spec on every tick of its schedule."""
    if instance.periodic_task_id is not None:
        PeriodicTask.objects.filter(pk=instance.periodic_task_id).delete()


def _interval(seconds: int) -> IntervalSchedule:
    if seconds < 1:
        raise BadInput("an interval is at least one second", field="every_seconds")
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=seconds, period=IntervalSchedule.SECONDS
    )
    return interval


def next_run_times(
    spec: TrainingSpec, count: int = 5, now: datetime | None = None
) -> list[datetime]:
    """When beat will next run the spec, in the spec's time zone. Empty: nothing planned
    (no schedule, disabled, a one-off that ran, or a solar or clocked schedule)."""
    task = spec.periodic_task
    if task is None or not task.enabled or (task.one_off and task.total_run_count):
        return []
    now = now or timezone.now()
    start = max(now, task.start_time) if task.start_time else now
    if task.interval is not None:
        times = _interval_times(task, start, count)
    elif task.crontab is not None:
        times = crontab_times(task.crontab, start, count)
    else:
        return []
    if task.one_off:
        times = times[:1]
    if task.expires:
        times = [at for at in times if at <= task.expires]
    zone = zone_of(spec.timezone)
    return [at.astimezone(zone) for at in times]


def _interval_times(task: PeriodicTask, start: datetime, count: int) -> list[datetime]:
    every = task.interval.schedule.run_every
    # Beat runs an overdue task at once, then every interval after that.
    first = max((task.last_run_at or start) + every, start)
    return [first + every * step for step in range(count)]


def crontab_times(cron: CrontabSchedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` times strictly after `after` that the crontab matches, in its zone.

    As in Celery, a day must match both day of month and day of week."""
    rule = schedules.crontab(
        minute=cron.minute,
        hour=cron.hour,
        day_of_week=cron.day_of_week,
        day_of_month=cron.day_of_month,
        month_of_year=cron.month_of_year,
    )
    zone: tzinfo = zone_of(str(cron.timezone))
    local = after.astimezone(zone)
    day = local.date()
    found: list[datetime] = []
    for _ in range(_DAYS_SEARCHED):
        if _day_matches(rule, day.month, day.day, day.isoweekday() % 7):  # cron: Sunday is 0
            for hour in sorted(rule.hour):
                for minute in sorted(rule.minute):
                    at = _on_the_clock(datetime(day.year, day.month, day.day, hour, minute), zone)
                    if at > local and at not in found:
                        found.append(at)
                    if len(found) == count:
                        return found
        day += timedelta(days=1)
    return found


def _on_the_clock(wall: datetime, zone: tzinfo) -> datetime:
    """The wall time in the zone; one the clocks skip (the night they go forward) as the time
    beat runs it, as far past the jump (02:30 is 03:30), not a time of the old offset."""
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)


def _day_matches(rule: schedules.crontab, month: int, day: int, weekday: int) -> bool:
    return month in rule.month_of_year and day in rule.day_of_month and weekday in rule.day_of_week


def describe(task: PeriodicTask | None) -> str:
    if task is None:
        return "not scheduled"
    state = "" if task.enabled else " (disabled)"
    return f"{task.crontab or task.interval or task.solar or task.clocked}{state}"
