"""A new staff user's first hour in the admin, in a real browser against the real stack."""

import csv
import io
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from playwright.sync_api import Page, expect

from mlsite import broker, dashboard
from modelregistry.models import ModelVersion, RunStatus, Stage, TrainingRun
from predictions.models import Kind, PredictionJob, Status
from tests.base import make_user
from tests.builders import IRIS_FEATURES, iris_rows, make_training_spec, make_version
from tests.processes import dump_stacks, wait_for

from .conftest import save_docs_screenshot, sign_in, staff_password

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def new_staff_user(username: str = "newcomer") -> str:
    user = make_user(username, staff=True, is_superuser=True)
    user.user_permissions.set(Permission.objects.all())
    return username


def rows_csv(path: Path, count: int) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["row_id", *IRIS_FEATURES])
        writer.writeheader()
        for number, row in enumerate(iris_rows(count)):
            writer.writerow({"row_id": f"r{number}", **row})
    return path


def what_the_stack_holds(job: PredictionJob, worker: subprocess.Popen) -> str:
    """For a job that did not finish: its row and chunks, the queues, the worker's stacks."""
    job.refresh_from_db()
    chunks = list(job.chunks.order_by("index").values_list("index", "status", "rows_failed"))
    unacked = broker.client().zcard("unacked_index")
    return (
        f"job {job.status} rows {job.rows_done}/{job.rows_total} chunks {chunks}; "
        f"queued {dashboard.queue_depths()}, unacked {unacked}\n{dump_stacks(worker)}"
    )


def test_a_new_user_submits_a_csv_watches_it_finish_and_downloads_the_result(
    page: Page, live_beat, live_worker: subprocess.Popen, tmp_path: Path
) -> None:
    make_version("iris")
    username = new_staff_user()
    sign_in(page, username, staff_password(username))

    page.click("text=Prediction jobs")
    page.click("text=Add prediction job")
    page.fill("#id_model_ref", "iris")
    page.set_input_files("#id_upload", str(rows_csv(tmp_path / "rows.csv", 300)))
    page.fill("#id_id_column", "row_id")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    job = PredictionJob.objects.get()
    assert job.kind == Kind.BATCH
    page.goto(f"/admin/predictions/predictionjob/{job.pk}/change/")
    # The page follows the job by itself (progress.js), reloading once it is finished.
    try:
        expect(page.locator(f'[data-job-percent="{job.pk}"]')).to_have_text("100%", timeout=60_000)
    except AssertionError as failure:  # seen once in a full CI run: say where it was stuck
        raise AssertionError(f"{failure}\n{what_the_stack_holds(job, live_worker)}") from None
    expect(page.locator("a", has_text=re.compile("^CSV$"))).to_be_visible(timeout=10_000)
    expect(page.locator(f'progress[data-job="{job.pk}"]')).to_have_attribute("value", "100")
    save_docs_screenshot(page, "job-page")

    with page.expect_download() as download_info:
        page.click("a:text-is('CSV')")
    saved = tmp_path / "result.csv"
    download_info.value.save_as(saved)
    result = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert len(result) == 300
    assert result[0]["row_id"] == "r0" and result[0]["prediction"] in {"0", "1", "2"}


def test_a_running_jobs_progress_bar_moves_without_a_reload(page: Page, live_web: str) -> None:
    version = make_version("iris")
    username = new_staff_user()
    job = PredictionJob.objects.create(
        owner=make_user("someone"),
        version=version,
        model_ref="iris",
        artifact_sha256=version.sha256,
        kind=Kind.BATCH,
        status=Status.RUNNING,
        rows_total=1000,
        started_at=timezone.now(),
        lease_expires_at=timezone.now() + timedelta(hours=1),  # not for the reconciler
    )
    sign_in(page, username, staff_password(username))
    page.goto("/admin/predictions/predictionjob/")
    percent = page.locator(f'[data-job-percent="{job.pk}"]')
    expect(percent).to_have_text("0%")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    PredictionJob.objects.filter(pk=job.pk).update(rows_done=400)
    expect(percent).to_have_text("40%", timeout=10_000)
    status = page.locator(f'[data-job-status="{job.pk}"]')
    expect(status).to_have_text("Running")
    PredictionJob.objects.filter(pk=job.pk).update(rows_done=1000, status=Status.SUCCEEDED)
    expect(percent).to_have_text("100%", timeout=10_000)
    # The status beside the bar follows it: a full bar beside "Running" (or "Queued") read
    # as a job stuck at its end until the page was reloaded.
    expect(status).to_have_text("Succeeded", timeout=10_000)
    assert navigations == []  # the list page updated in place


def test_a_staff_member_promotes_a_version_from_its_page(page: Page) -> None:
    call_command("seed_demo")  # iris v1 in production, with holdout metrics
    candidate = make_version("iris", stage=Stage.NONE)
    # Metrics as a training run would record them, so the page compares two versions.
    ModelVersion.objects.filter(pk=candidate.pk).update(metrics={"accuracy": 0.97, "f1": 0.97})
    username = new_staff_user()
    sign_in(page, username, staff_password(username))

    page.goto(f"/admin/modelregistry/modelversion/{candidate.pk}/change/")
    page.click("button:has-text('Promote to production')")
    expect(page.locator("ul.messagelist")).to_be_visible()

    candidate.refresh_from_db()
    assert candidate.stage == Stage.PRODUCTION
    save_docs_screenshot(page, "version-page")
    first = ModelVersion.objects.get(registered_model__name="iris", number=1)
    assert first.stage == Stage.ARCHIVED
    page.goto(f"/admin/modelregistry/registeredmodel/{first.registered_model_id}/change/")
    expect(page.locator("svg").first).to_be_visible()
    save_docs_screenshot(page, "model-page")


def test_retraining_scheduled_in_the_beat_admin_runs_on_its_own(
    page: Page, live_beat, live_worker
) -> None:
    spec = make_training_spec("iris-often")
    every_two_seconds = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    username = new_staff_user()
    sign_in(page, username, staff_password(username))

    page.goto("/admin/django_celery_beat/periodictask/add/")
    page.fill("#id_name", "retrain iris often")
    page.select_option("#id_regtask", "modelregistry.tasks.retrain")
    page.select_option("#id_interval", str(every_two_seconds.pk))
    kwargs = page.locator("#id_kwargs")
    if not kwargs.is_visible():  # the Arguments fieldset starts collapsed
        page.click("summary:has-text('Arguments'), a:has-text('Show')")
    kwargs.fill(f'{{"spec_id": {spec.pk}}}')
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    task = PeriodicTask.objects.get(name="retrain iris often")
    assert task.enabled and task.task == "modelregistry.tasks.retrain"

    def trained() -> bool:
        return TrainingRun.objects.filter(spec=spec, status=RunStatus.SUCCEEDED).exists()

    wait_for(trained, 60, "a training run started by beat")
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)


def test_the_dashboard_shows_the_stack_at_a_glance(page: Page, live_beat, live_web: str) -> None:
    version = make_version("iris")
    owner = make_user("client")
    now = timezone.now()
    for seconds, minutes_ago in ((0.4, 50), (1.2, 30), (0.8, 30), (2.5, 5), (0.3, 1)):
        job = PredictionJob.objects.create(
            owner=owner,
            version=version,
            model_ref="iris",
            artifact_sha256=version.sha256,
            status=Status.SUCCEEDED,
            rows_total=1,
            rows_done=1,
        )
        finished = now - timedelta(minutes=minutes_ago)
        PredictionJob.objects.filter(pk=job.pk).update(
            created_at=finished - timedelta(seconds=seconds), finished_at=finished
        )
    hourly = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.update_or_create(  # beat may have written it from the settings
        name="purge-expired-results",
        defaults={
            "task": "mlsite.tasks.purge_expired_results",
            "interval": hourly,
            "last_run_at": now - timedelta(minutes=20),
        },
    )
    username = new_staff_user()
    sign_in(page, username, staff_password(username))

    page.click("text=Queue dashboard")
    expect(page.locator("#workers h2")).to_contain_text(re.compile(r"Workers online: [1-9]"))
    expect(page.locator("#beat")).to_contain_text("alive")
    expect(page.locator("#queues")).to_contain_text("predict")
    expect(page.locator("#last-hour h2")).to_contain_text("5 jobs finished")
    assert page.locator("#last-hour svg rect").count() == 4  # four distinct minutes
    expect(page.locator("#beat")).to_contain_text("purge-expired-results")
    save_docs_screenshot(page, "dashboard")


def test_after_an_error_the_add_form_asks_for_the_file_again(
    page_on_a_new_web: Page, tmp_path: Path
) -> None:
    page = page_on_a_new_web
    make_version("iris")
    username = new_staff_user()
    sign_in(page, username, staff_password(username))

    page.goto("/admin/predictions/predictionjob/add/")
    page.fill("#id_model_ref", "iris")
    page.set_input_files("#id_upload", str(rows_csv(tmp_path / "rows.csv", 5)))
    page.fill("#id_id_column", "row_idd")
    page.click("input[name=_save]")
    expect(page.locator(".field-id_column .errorlist")).to_contain_text("no id column 'row_idd'")

    # A browser never refills a file input: the box was silently empty, and fixing the id
    # column alone then said "Paste JSON rows or upload a file".
    expect(page.locator(".field-upload .errorlist")).to_contain_text("Choose the file again")
    assert page.input_value("#id_id_column") == "row_idd"
    page.fill("#id_id_column", "row_id")
    page.set_input_files("#id_upload", str(tmp_path / "rows.csv"))
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")
