"""The admin screens fit a 1400 px window: nothing sticks out of its card or scrolls sideways."""

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from playwright.sync_api import Page

from predictions import submission
from tests.base import make_user
from tests.builders import iris_rows, make_version

from .conftest import sign_in, staff_password

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WIDE = {"width": 1400, "height": 900}


def as_staff(page: Page) -> None:
    make_user("layout", staff=True, is_superuser=True)
    page.set_viewport_size(WIDE)
    sign_in(page, "layout", staff_password("layout"))


def test_the_beat_table_stays_in_its_card_with_each_due_time_on_one_line(page: Page) -> None:
    every = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    for name, task in [
        ("reconcile-prediction-jobs", "predictions.tasks.reconcile_jobs"),
        ("purge-expired-results", "mlsite.tasks.purge_expired_results"),
        ("celery.backend_cleanup", "celery.backend_cleanup"),
    ]:
        PeriodicTask.objects.create(name=name, task=task, interval=every)
    as_staff(page)

    page.goto("/admin/dashboard/")
    card, table = page.locator("#beat"), page.locator("#beat table")
    inside = card.evaluate("card => card.getBoundingClientRect().right - 12")  # its padding
    assert table.evaluate("table => table.getBoundingClientRect().right") <= inside
    lines = page.locator("#beat tbody td:nth-child(2)").evaluate_all(
        "cells => cells.map(cell => { const range = document.createRange();"
        " range.selectNodeContents(cell); return new Set([...range.getClientRects()]"
        ".map(rect => Math.round(rect.top))).size; })"
    )
    assert lines == [1, 1, 1]


def test_the_job_list_shows_every_column_without_scrolling_sideways(page: Page) -> None:
    make_version()
    for _ in range(3):
        submission.submit_rows(make_user(f"owner-{_}"), "iris", iris_rows(1))
    as_staff(page)

    page.goto("/admin/predictions/predictionjob/")
    results = page.locator(".results")
    assert results.evaluate("box => box.scrollWidth - box.clientWidth") <= 0
    created = page.locator("#result_list td.field-created_at").first
    box_right = results.evaluate("box => box.getBoundingClientRect().right")
    assert created.evaluate("cell => cell.getBoundingClientRect().right") <= box_right
    assert timezone.now().strftime("%Y") in created.inner_text()


def test_an_idle_hour_charts_no_latency(page: Page) -> None:
    as_staff(page)
    page.goto("/admin/dashboard/")
    last_hour = page.locator("#last-hour")
    assert "no job finished in the last hour" in last_hour.inner_text()
    assert last_hour.locator("svg").count() == 0  # it drew a red "0.001 s" latency
