"""The training admin: spec buttons, schedule, chart, validated forms, and the runs list."""

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django_celery_beat.models import PeriodicTask

from modelregistry import scheduling
from modelregistry.models import (
    Dataset,
    RegisteredModel,
    RunStatus,
    RunTrigger,
    TrainingRun,
    TrainingSpec,
)
from tests.base import make_user, with_permissions
from tests.builders import make_model, make_training_spec

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss")
    client = Client()
    client.force_login(user)
    return client


def spec_url(spec: TrainingSpec, suffix: str = "change/") -> str:
    return f"/admin/modelregistry/trainingspec/{spec.pk}/{suffix}"


def finished_run(spec: TrainingSpec, accuracy: float, promoted: bool) -> TrainingRun:
    return TrainingRun.objects.create(
        spec=spec,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.SUCCEEDED,
        metrics={"accuracy": accuracy},
        production_metrics={"accuracy": 0.9},
        promoted=promoted,
        promotion_reason="better than production" if promoted else "not better than production",
    )


def test_the_spec_page_offers_retrain_and_schedule_and_charts_the_metric(admin_client) -> None:
    spec = make_training_spec()
    finished_run(spec, 0.93, promoted=True)
    finished_run(spec, 0.88, promoted=False)

    page = admin_client.get(spec_url(spec)).content.decode()

    assert "Retrain now" in page
    assert "Schedule…" in page
    assert "<svg" in page and "<polyline" in page
    assert page.count("<circle") == 2
    assert "not scheduled" in page


def test_next_planned_runs_of_a_short_interval_are_told_apart(admin_client) -> None:
    spec = make_training_spec()
    scheduling.ensure_schedule(spec, every_seconds=30)

    page = admin_client.get(spec_url(spec)).content.decode()

    planned = re.findall(r"<div>((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [^<]*)</div>", page)
    # At minute precision a 30 s interval listed each minute twice: 00:58, 00:58, 00:59 …
    assert len(planned) == 5
    assert len(set(planned)) == 5, planned


def test_a_nightly_schedule_plans_whole_minutes(admin_client) -> None:
    spec = make_training_spec(timezone="UTC")
    scheduling.ensure_schedule(spec)

    page = admin_client.get(spec_url(spec)).content.decode()

    assert re.search(r"<div>\w{3} \d{4}-\d\d-\d\d 02:00 UTC</div>", page)


def test_retrain_now_queues_a_run_from_the_admin(admin_client) -> None:
    spec = make_training_spec()

    response = admin_client.post(spec_url(spec, "retrain/"), follow=True)

    run = TrainingRun.objects.get(spec=spec)
    assert (run.status, run.trigger) == (RunStatus.QUEUED, RunTrigger.ADMIN)
    assert f"Run {run.pk} of iris-nightly queued." in response.content.decode()


def test_retrain_now_is_refused_while_a_run_is_in_progress(admin_client) -> None:
    spec = make_training_spec()
    TrainingRun.objects.create(spec=spec, trigger=RunTrigger.API, status=RunStatus.RUNNING)

    response = admin_client.post(spec_url(spec, "retrain/"), follow=True)

    assert "is running; try again once it has finished" in response.content.decode()
    assert TrainingRun.objects.count() == 1


def test_retrain_now_is_an_action_only_for_staff_who_may_change_specs(admin_client) -> None:
    make_training_spec()
    viewer = with_permissions(make_user("viewer", staff=True), "view_trainingspec")
    client = Client()
    client.force_login(viewer)

    page = client.get("/admin/modelregistry/trainingspec/").content.decode()

    assert "retrain_selected" not in page
    assert (
        "retrain_selected"
        in admin_client.get("/admin/modelregistry/trainingspec/").content.decode()
    )


def test_schedule_creates_the_beat_task_then_opens_it(admin_client) -> None:
    spec = make_training_spec(timezone="Europe/Berlin")

    first = admin_client.post(spec_url(spec, "schedule/"))
    task = PeriodicTask.objects.get()
    second = admin_client.post(spec_url(spec, "schedule/"))

    beat_page = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    assert first.url == second.url == beat_page
    assert json.loads(task.kwargs) == {"spec_id": spec.pk, "trigger": "schedule"}
    assert admin_client.get(beat_page).status_code == 200
    page = admin_client.get(spec_url(spec)).content.decode()
    assert "CET" in page or "CEST" in page  # next runs shown in the spec's time zone
    assert "02:00" in page


def test_staff_who_may_not_add_beat_tasks_are_not_offered_schedule(admin_client) -> None:
    spec = make_training_spec()
    trainer = with_permissions(
        make_user("trainer", staff=True), "view_trainingspec", "change_trainingspec"
    )
    client = Client()
    client.force_login(trainer)

    # The button was offered, and pressing it left the spec for the admin's index.
    page = client.get(spec_url(spec)).content.decode()
    assert "Retrain now</button>" in page and "Schedule…</button>" not in page
    answer = client.post(spec_url(spec, "schedule/"), follow=True)
    assert answer.redirect_chain[-1][0] == spec_url(spec)
    assert "Scheduling takes the “Can add periodic task” permission" in answer.content.decode()
    assert not PeriodicTask.objects.exists()


def spec_form(model: RegisteredModel, dataset: Dataset, **fields: str) -> dict[str, object]:
    """The spec add form's fields as a person fills them in, with `fields` typed over them."""
    return {
        "registered_model": model.pk,
        "dataset": dataset.pk,
        "estimator": "logistic_regression",
        "holdout_share": "0.2",
        "seed": "0",
        "primary_metric": "accuracy",
        "promotion_policy": "if_better",
        "timezone": "UTC",
        **fields,
    }


def test_the_spec_form_refuses_unknown_params(admin_client) -> None:
    model = make_model("iris")
    dataset = Dataset.objects.create(name="iris-builtin", builtin="iris")

    response = admin_client.post(
        "/admin/modelregistry/trainingspec/add/",
        spec_form(model, dataset, name="bad", params='{"Cee": 1}'),
    )

    assert response.status_code == 200
    assert "unknown params for LogisticRegression: Cee" in response.content.decode()
    assert not TrainingSpec.objects.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{"C": 1e400}', "1e400 is too large for a number"),
        ('{"C": Infinity}', "Infinity is not valid JSON"),
        ("[" * 5000 + "]" * 5000, "JSON parse error - maximum recursion depth"),
    ],
)
def test_the_spec_form_refuses_params_no_database_stores_as_json(
    admin_client, params: str, message: str
) -> None:
    model = make_model("iris")
    dataset = Dataset.objects.create(name="iris-builtin", builtin="iris")

    # Django's JSON box read 1e400 and Infinity as infinity, the estimator took it, and the
    # insert broke the JSON check constraint; deep nesting was a RecursionError. Both a 500.
    response = admin_client.post(
        "/admin/modelregistry/trainingspec/add/",
        spec_form(model, dataset, name="huge", params=params),
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not TrainingSpec.objects.exists()


def test_a_csv_dataset_must_contain_its_target_column(admin_client) -> None:
    upload = SimpleUploadedFile("data.csv", b"a,b\n1,2\n", content_type="text/csv")

    response = admin_client.post(
        "/admin/modelregistry/dataset/add/",
        {"name": "mine", "file": upload, "target_column": "y", "builtin": ""},
    )

    assert "the file has no column &#x27;y&#x27;" in response.content.decode()
    assert not Dataset.objects.exists()


def test_the_runs_list_shows_status_metrics_and_promotion(admin_client) -> None:
    spec = make_training_spec()
    finished_run(spec, 0.93, promoted=True)
    TrainingRun.objects.create(
        spec=None, trigger=RunTrigger.SCHEDULE, status=RunStatus.FAILED, error="no training spec"
    )

    page = admin_client.get("/admin/modelregistry/trainingrun/").content.decode()

    assert "accuracy 0.9300" in page
    assert "accuracy 0.9000" in page
    assert "Succeeded" in page and "Failed" in page
    assert "no training spec" in page


@pytest.mark.parametrize(
    ("builtin", "upload", "message"),
    [
        ("", None, "Choose a built-in dataset or upload a file."),
        ("iris", b"a,y\n1,2\n", "Choose a built-in dataset or upload a file, not both."),
    ],
)
def test_a_dataset_needs_exactly_one_source_and_says_so_once(
    admin_client, builtin: str, upload: bytes | None, message: str
) -> None:
    form = {"name": "mine", "builtin": builtin, "target_column": "y", "description": ""}
    if upload is not None:
        form["file"] = SimpleUploadedFile("data.csv", upload, content_type="text/csv")
    response = admin_client.post("/admin/modelregistry/dataset/add/", form)
    page = response.content.decode()
    assert page.count(message) == 1
    assert "Constraint" not in page and ("not both" in message) == ("not both" in page)
    assert not Dataset.objects.exists()


def test_a_dataset_page_names_its_file_without_a_link_that_would_404(
    admin_client, private_artifacts
) -> None:
    upload = SimpleUploadedFile("data.csv", b"a,y\n1,2\n3,4\n", content_type="text/csv")
    response = admin_client.post(
        "/admin/modelregistry/dataset/add/",
        {"name": "mine", "file": upload, "target_column": "y", "builtin": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    dataset = Dataset.objects.get()
    page = admin_client.get(f"/admin/modelregistry/dataset/{dataset.pk}/change/").content.decode()
    assert dataset.file.name.startswith("datasets/") and dataset.file.name in page
    assert 'href="/datasets/' not in page
    assert 'type="file" name="file"' in page  # it may still be replaced


def test_cancel_selected_runs_cancels_the_unfinished_and_says_why_not_the_rest(
    admin_client,
) -> None:
    spec = make_training_spec()
    queued = TrainingRun.objects.create(spec=spec, trigger=RunTrigger.ADMIN)
    done = finished_run(spec, 0.95, promoted=True)
    viewer = with_permissions(make_user("viewer", staff=True), "view_trainingrun")
    client = Client()
    client.force_login(viewer)
    assert "cancel_selected" not in client.get("/admin/modelregistry/trainingrun/").content.decode()

    response = admin_client.post(
        "/admin/modelregistry/trainingrun/",
        {"action": "cancel_selected", "_selected_action": [queued.pk, done.pk]},
        follow=True,
    )

    assert "Cancelled 1 of 2 run(s). 1 had already finished" in response.content.decode()
    queued.refresh_from_db()
    done.refresh_from_db()
    assert (queued.status, queued.error) == (RunStatus.CANCELLED, "cancelled by boss")
    assert done.status == RunStatus.SUCCEEDED


def test_cancel_on_a_list_filtered_to_queued_runs_counts_the_runs_selected(admin_client) -> None:
    spec = make_training_spec()
    queued = TrainingRun.objects.create(spec=spec, trigger=RunTrigger.ADMIN)
    response = admin_client.post(
        "/admin/modelregistry/trainingrun/?status__exact=queued",
        {"action": "cancel_selected", "_selected_action": [queued.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Cancelled 1 of 1 run(s)." in page and "had already finished" not in page
