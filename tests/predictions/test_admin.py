"""The jobs admin: staff submit from the add page; list, job page and actions work."""

import io
import json

import pytest
from django.test import Client, override_settings

from modelregistry.models import ModelVersion
from predictions.models import Kind, PredictionJob, Status
from tests.base import make_user, with_permissions
from tests.builders import IRIS_FEATURES, iris_rows, make_version

pytestmark = pytest.mark.django_db
ADD_URL = "/admin/predictions/predictionjob/add/"
LIST_URL = "/admin/predictions/predictionjob/"


@pytest.fixture
def admin_client() -> Client:
    make_version()
    client = Client()
    client.force_login(make_user("root", staff=True, is_superuser=True))
    return client


def test_staff_submit_json_rows_from_the_add_page(admin_client, django_capture_on_commit_callbacks):
    rows = iris_rows(3)
    with django_capture_on_commit_callbacks() as sent:
        answer = admin_client.post(
            ADD_URL, {"model_ref": "iris", "rows": json.dumps(rows), "priority": 5}
        )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    job = PredictionJob.objects.get()
    assert (job.kind, job.status, job.rows_total, job.owner.username) == (
        "single",
        "queued",
        3,
        "root",
    )
    assert len(sent) == 1  # its message goes out once the row is committed


def test_staff_submit_a_csv_from_the_add_page(admin_client) -> None:
    upload = io.BytesIO((",".join(IRIS_FEATURES) + "\n1,2,3,4\n").encode())
    upload.name = "rows.csv"
    answer = admin_client.post(ADD_URL, {"model_ref": "iris", "upload": upload, "priority": 3})
    assert answer.status_code == 302
    job = PredictionJob.objects.get()
    assert (job.kind, job.input_format, job.priority) == (Kind.BATCH, "csv", 3)


def test_a_file_jobs_page_names_its_input_file_without_a_link_that_would_404(
    admin_client,
) -> None:
    upload = io.BytesIO((",".join(IRIS_FEATURES) + "\n1,2,3,4\n").encode())
    upload.name = "rows.csv"
    admin_client.post(ADD_URL, {"model_ref": "iris", "upload": upload, "priority": 3})
    job = PredictionJob.objects.get()
    page = admin_client.get(f"{LIST_URL}{job.pk}/change/").content.decode()
    assert job.input_file.name.startswith("uploads/") and job.input_file.name in page
    assert 'href="/uploads/' not in page
    assert admin_client.get("/" + job.input_file.name).status_code == 404  # never served


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"model_ref": "iris", "rows": "[{]"}, "JSON parse error"),
        ({"model_ref": "nope", "rows": "[]"}, "no model named"),
        ({"model_ref": "iris", "rows": '[{"sepal_length": 1}]'}, "is missing"),
        ({"model_ref": "iris"}, "Paste JSON rows or upload a file"),
    ],
)
def test_a_bad_add_form_shows_the_error_and_creates_nothing(admin_client, form, message) -> None:
    answer = admin_client.post(ADD_URL, {**form, "priority": 5})
    assert answer.status_code == 200
    assert message in answer.content.decode()
    assert not PredictionJob.objects.exists()


def test_a_model_left_blank_is_said_once(admin_client) -> None:
    answer = admin_client.post(ADD_URL, {"model_ref": "", "rows": a_row(), "priority": 5})
    page = answer.content.decode()
    # Beside "This field is required.", the top of the form said "'' is not a model reference".
    assert "This field is required." in page
    assert "is not a model reference" not in page


def test_the_list_and_job_page_show_progress_and_the_error(admin_client) -> None:
    admin_client.post(
        ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(2)), "priority": 5}
    )
    job = PredictionJob.objects.get()
    PredictionJob.objects.filter(pk=job.pk).update(
        status=Status.FAILED, error_code="scoring_failed", error_message="boom", rows_done=1
    )
    listing = admin_client.get(LIST_URL).content.decode()
    assert "<progress" in listing and "iris:1" in listing
    page = admin_client.get(f"{LIST_URL}{job.pk}/change/").content.decode()
    assert "scoring_failed" in page and "boom" in page and "sepal_length" in page


def test_the_cancel_and_retry_actions_use_the_domain_functions(admin_client) -> None:
    for _ in range(2):
        admin_client.post(
            ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(1)), "priority": 5}
        )
    ids = [str(pk) for pk in PredictionJob.objects.values_list("pk", flat=True)]
    answer = admin_client.post(
        LIST_URL, {"action": "cancel_selected", "_selected_action": ids}, follow=True
    )
    assert "Cancelled 2 of 2 job(s)." in answer.content.decode()
    assert set(PredictionJob.objects.values_list("status", flat=True)) == {Status.CANCELLED}
    answer = admin_client.post(
        LIST_URL, {"action": "retry_selected", "_selected_action": ids}, follow=True
    )
    assert "Queued 2 of 2 job(s) again." in answer.content.decode()
    assert set(PredictionJob.objects.values_list("status", flat=True)) == {Status.QUEUED}


def test_cancel_and_retry_actions_say_why_jobs_were_left_alone(admin_client) -> None:
    for _ in range(2):
        admin_client.post(
            ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(1)), "priority": 5}
        )
    first, second = [str(pk) for pk in PredictionJob.objects.values_list("pk", flat=True)]
    PredictionJob.objects.filter(pk=first).update(status=Status.SUCCEEDED)

    def act(action: str, ids: list[str]) -> str:
        answer = admin_client.post(
            LIST_URL, {"action": action, "_selected_action": ids}, follow=True
        )
        return answer.content.decode()

    page = act("cancel_selected", [first])
    assert "Cancelled 0 of 1 job(s). 1 had already finished, so there was nothing to cancel." in (
        page
    )
    page = act("retry_selected", [first, second])
    assert "Queued 0 of 2 job(s) again. 2 had not failed or been cancelled." in page
    PredictionJob.objects.filter(pk=second).update(
        status=Status.FAILED, purged_at="2025-01-01T00:00:00Z"
    )
    page = act("retry_selected", [second])
    assert "Queued 0 of 1 job(s) again. 1 had their inputs deleted by result retention." in page


def test_staff_who_may_only_view_jobs_cannot_cancel_or_retry_them(admin_client) -> None:
    admin_client.post(
        ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(1)), "priority": 5}
    )
    job = PredictionJob.objects.get()
    viewer = Client()
    viewer.force_login(with_permissions(make_user("viewer", staff=True), "view_predictionjob"))

    assert "cancel_selected" not in viewer.get(LIST_URL).content.decode()
    viewer.post(LIST_URL, {"action": "cancel_selected", "_selected_action": [str(job.pk)]})

    job.refresh_from_db()
    assert job.status == Status.QUEUED


def test_staff_who_submit_jobs_cancel_and_retry_their_own_but_not_others(admin_client) -> None:
    submitter = with_permissions(
        make_user("submitter", staff=True), "add_predictionjob", "view_predictionjob"
    )
    client = Client()
    client.force_login(submitter)
    for _ in range(2):
        client.post(ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(1)), "priority": 5})
    admin_client.post(
        ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(1)), "priority": 5}
    )
    ids = [str(pk) for pk in PredictionJob.objects.values_list("pk", flat=True)]

    # The API lets an owner cancel or retry their job; the admin offered them no action.
    assert "cancel_selected" in client.get(LIST_URL).content.decode()
    page = client.post(
        LIST_URL, {"action": "cancel_selected", "_selected_action": ids}, follow=True
    ).content.decode()
    assert "Cancelled 2 of 3 job(s). 1 belonged to someone else" in page
    statuses = dict(PredictionJob.objects.values_list("owner__username", "status").distinct())
    assert statuses == {"submitter": Status.CANCELLED, "root": Status.QUEUED}

    page = client.post(
        LIST_URL, {"action": "retry_selected", "_selected_action": ids}, follow=True
    ).content.decode()
    assert "Queued 2 of 3 job(s) again. 1 belonged to someone else" in page
    assert set(PredictionJob.objects.values_list("status", flat=True)) == {Status.QUEUED}


def a_row(**values: object) -> str:
    return json.dumps([{**iris_rows(1)[0], **values}])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "JSON parse error - maximum recursion depth"),
        ("[" * 40 + "]" * 40, "JSON parse error - nested deeper than 32 levels"),
        (a_row().replace("5.1", "9" * 5000), "Exceeds the limit"),
        (a_row().replace("5.1", "9" * 401), "is too large for a number"),
        (a_row().replace("5.1", "1e999"), "is too large for a number"),
        (a_row().replace("5.1", "NaN"), "NaN is not valid JSON"),
    ],
)
def test_rows_the_api_would_refuse_as_bad_json_are_a_form_error(
    admin_client, rows: str, message: str
) -> None:
    answer = admin_client.post(ADD_URL, {"model_ref": "iris", "rows": rows, "priority": 5})
    assert answer.status_code == 200
    assert message in answer.content.decode()
    assert not PredictionJob.objects.exists()


def test_a_null_feature_is_called_empty(admin_client) -> None:
    answer = admin_client.post(
        ADD_URL, {"model_ref": "iris", "rows": a_row(sepal_width=None), "priority": 5}
    )
    assert "inputs[0].sepal_width is empty (null); it must be a number" in answer.content.decode()


def test_an_empty_file_shows_only_that_it_is_empty(admin_client) -> None:
    upload = io.BytesIO(b"")
    upload.name = "rows.csv"
    answer = admin_client.post(ADD_URL, {"model_ref": "iris", "upload": upload, "priority": 5})
    page = answer.content.decode()
    assert "The submitted file is empty." in page
    assert "Paste JSON rows" not in page


def test_the_add_form_refuses_a_version_marked_unusable(admin_client) -> None:
    ModelVersion.objects.update(is_usable=False, unusable_reason="bad hash")
    answer = admin_client.post(
        ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(1)), "priority": 5}
    )
    assert answer.status_code == 200
    assert "iris:1 is unusable (bad hash)" in answer.content.decode()
    assert not PredictionJob.objects.exists()


def test_rows_pasted_over_the_request_limit_are_a_413_that_names_it(admin_client) -> None:
    rows = json.dumps(iris_rows(50))
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=len(rows) // 2):
        answer = admin_client.post(ADD_URL, {"model_ref": "iris", "rows": rows, "priority": 5})
    assert answer.status_code == 413
    assert f"{len(rows) // 2:,}-byte limit; send large inputs as a file" in answer.content.decode()
    assert not PredictionJob.objects.exists()


def test_cancel_on_a_list_filtered_to_queued_jobs_counts_the_jobs_selected(admin_client) -> None:
    for _ in range(2):
        admin_client.post(
            ADD_URL, {"model_ref": "iris", "rows": json.dumps(iris_rows(1)), "priority": 5}
        )
    ids = [str(pk) for pk in PredictionJob.objects.values_list("pk", flat=True)]
    # The action's jobs are the selection within the list's filter: counted after the
    # cancel, they were none ("Cancelled 2 of 0 job(s). -2 had already finished").
    answer = admin_client.post(
        f"{LIST_URL}?status__exact=queued",
        {"action": "cancel_selected", "_selected_action": ids},
        follow=True,
    )
    page = answer.content.decode()
    assert "Cancelled 2 of 2 job(s)." in page and "had already finished" not in page
