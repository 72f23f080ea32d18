"""The jobs API without a worker: validation, permissions, idempotency, cancel and retry."""

import io
import json
import threading

import psycopg
import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from rest_framework.test import APIClient

from mlsite import sending
from predictions import running, submission, waiting
from predictions.models import PredictionJob, Status
from tests import processes
from tests.base import make_user, with_permissions
from tests.builders import IRIS_FEATURES, iris_rows, make_version

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def owner_client() -> APIClient:
    make_version()
    return client_for(make_user("owner"))


def post(client: APIClient, body: object) -> dict:
    answer = client.post("/api/v1/jobs/", body, format="json")
    return {**answer.json(), "http": answer.status_code}


def test_a_submitted_job_is_queued_with_its_version_and_rows(owner_client) -> None:
    answer = post(owner_client, {"model": "iris", "inputs": iris_rows(3), "priority": 7})
    assert answer["http"] == 201
    job = PredictionJob.objects.get(pk=answer["id"])
    assert (job.status, job.rows_total, job.priority, job.version.ref) == ("queued", 3, 7, "iris:1")
    assert job.task_id and job.enqueued_at


def test_the_same_idempotency_key_returns_the_first_job(owner_client) -> None:
    body = {"model": "iris", "input": iris_rows(1)[0], "idempotency_key": "k-1"}
    first = post(owner_client, body)
    second = post(owner_client, body)
    assert (first["http"], second["http"]) == (201, 200)
    assert first["id"] == second["id"]
    assert PredictionJob.objects.count() == 1


def test_one_idempotency_key_is_per_owner(owner_client) -> None:
    body = {"model": "iris", "input": iris_rows(1)[0], "idempotency_key": "shared"}
    mine = post(owner_client, body)
    theirs = post(client_for(make_user("other")), body)
    assert theirs["http"] == 201
    assert mine["id"] != theirs["id"]


def bad_rows() -> list[tuple[str, object, str, str]]:
    row = iris_rows(1)[0]
    return [
        (
            "missing feature",
            {**{k: v for k, v in row.items() if k != "petal_width"}},
            "bad_input",
            "inputs[0].petal_width",
        ),
        ("extra feature", {**row, "colour": 1.0}, "bad_input", "inputs[0].colour"),
        ("text value", {**row, "sepal_length": "5.1"}, "bad_input", "inputs[0].sepal_length"),
        ("boolean value", {**row, "sepal_width": True}, "bad_input", "inputs[0].sepal_width"),
        ("null value", {**row, "petal_length": None}, "bad_input", "inputs[0].petal_length"),
        ("not an object", [1, 2, 3, 4], "bad_input", "inputs[0]"),
    ]


@pytest.mark.parametrize(("case", "row", "code", "field"), bad_rows(), ids=lambda v: str(v)[:20])
def test_a_bad_row_is_refused_naming_the_row_and_field(
    owner_client, case, row, code, field
) -> None:
    answer = post(owner_client, {"model": "iris", "inputs": [iris_rows(1)[0], row]})
    field = field.replace("inputs[0]", "inputs[1]")
    assert answer["http"] == 400, case
    assert (answer["code"], answer["field"]) == (code, field)
    assert PredictionJob.objects.count() == 0


@pytest.mark.parametrize(("case", "row", "code", "field"), bad_rows(), ids=lambda v: str(v)[:20])
def test_a_bad_row_sent_as_input_is_named_by_that_field(
    owner_client, case, row, code, field
) -> None:
    answer = post(owner_client, {"model": "iris", "input": row})
    assert answer["http"] == 400, case
    assert (answer["code"], answer["field"]) == (code, field.replace("inputs[0]", "input"))
    assert PredictionJob.objects.count() == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused(owner_client, literal) -> None:
    names = ", ".join(f'"{name}": 1.0' for name in IRIS_FEATURES[1:])
    body = f'{{"model": "iris", "input": {{"{IRIS_FEATURES[0]}": {literal}, {names}}}}}'
    answer = owner_client.post("/api/v1/jobs/", body, content_type="application/json")
    assert answer.status_code == 400
    assert PredictionJob.objects.count() == 0


def test_an_unknown_model_is_refused(owner_client) -> None:
    answer = post(owner_client, {"model": "nope", "inputs": iris_rows(1)})
    assert (answer["http"], answer["code"], answer["field"]) == (404, "unknown_model", "model")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "iris"},
        {"model": "iris", "inputs": [], "input": {}},
        {"inputs": [{}]},
        {"model": "iris", "inputs": "rows"},
        {"model": "iris", "inputs": [{}], "extra": 1},
        {"model": "iris", "input": {}, "priority": 12},
    ],
)
def test_a_malformed_envelope_is_a_400_with_a_code(owner_client, body) -> None:
    answer = post(owner_client, body)
    assert answer["http"] == 400
    assert answer["code"]


@override_settings(MAX_INLINE_ROWS=5)
def test_too_many_inline_rows_are_refused(owner_client) -> None:
    answer = post(owner_client, {"model": "iris", "inputs": iris_rows(6)})
    assert (answer["http"], answer["code"], answer["field"]) == (400, "too_many_rows", "inputs")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2000)
def test_a_body_too_large_is_a_413(owner_client) -> None:
    answer = post(owner_client, {"model": "iris", "inputs": iris_rows(100)})
    assert (answer["http"], answer["code"]) == (413, "body_too_large")


@override_settings(MAX_UPLOAD_BYTES=100)
def test_a_file_too_large_is_a_413(owner_client) -> None:
    upload = io.BytesIO((",".join(IRIS_FEATURES) + "\n" + "1,2,3,4\n" * 50).encode())
    upload.name = "big.csv"
    answer = owner_client.post("/api/v1/jobs/", {"model": "iris", "file": upload})
    assert answer.status_code == 413


@pytest.mark.parametrize(
    ("name", "content", "extra", "field"),
    [
        ("rows.csv", "sepal_length,sepal_width\n1,2\n", {}, "file"),
        ("rows.csv", ",".join([*IRIS_FEATURES, "colour"]) + "\n1,2,3,4,5\n", {}, "file"),
        ("rows.csv", ",".join(IRIS_FEATURES) + "\n1,2,3,4\n", {"id_column": "key"}, "id_column"),
        *(
            (
                "rows.csv",
                f"{key},{','.join(IRIS_FEATURES)}\nA,1,2,3,4\n",
                {"id_column": key},
                "id_column",
            )
            for key in ("prediction", "probability_0")  # the result's own columns
        ),
        ("rows.txt", "anything", {}, "file"),
        ("rows.parquet", "not parquet", {}, "file"),
        ("rows.csv", "", {}, "file"),
    ],
)
def test_a_file_whose_columns_do_not_fit_is_refused(owner_client, name, content, extra, field):
    upload = io.BytesIO(content.encode())
    upload.name = name
    answer = owner_client.post("/api/v1/jobs/", {"model": "iris", "file": upload, **extra})
    assert answer.status_code == 400
    body = answer.json()
    assert body.get("field") == field or field in body  # DRF names an empty file by its key
    assert PredictionJob.objects.count() == 0


def test_an_id_column_sent_without_its_name_is_refused_with_the_way_to_keep_it(owner_client):
    upload = io.BytesIO(f"row_id,{','.join(IRIS_FEATURES)}\nr1,1,2,3,4\n".encode())
    upload.name = "rows.csv"

    answer = owner_client.post("/api/v1/jobs/", {"model": "iris", "file": upload})

    assert answer.status_code == 400
    # The README's rows.csv has a row_id column: without id_column, 'unknown column(s)
    # row_id' alone left a new user to guess that the column could be carried through.
    assert answer.json()["detail"] == (
        "file has unknown column(s) row_id: the model takes only its features; name a column "
        "to carry through to the result with id_column (--id-column in the client)"
    )


@pytest.mark.parametrize(("delimiter", "named"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_separated_by_another_character_is_refused_saying_so(
    owner_client, delimiter, named
) -> None:
    # A spreadsheet where the comma is the decimal mark writes 5,1;3,5;… under a ; header.
    header = delimiter.join(IRIS_FEATURES)
    upload = io.BytesIO(f"{header}\n5,1{delimiter}3,5{delimiter}1,4{delimiter}0,2\n".encode())
    upload.name = "rows.csv"

    answer = owner_client.post("/api/v1/jobs/", {"model": "iris", "file": upload})

    assert answer.status_code == 400
    assert answer.json()["detail"] == (
        f"CSV fields must be separated by commas; this file's header is one column, "
        f"{header!r}, its names separated by {named}"
    )
    assert PredictionJob.objects.count() == 0


def test_a_database_that_does_not_answer_is_a_503_in_json(owner_client, monkeypatch) -> None:
    def locked(*args: object, **kwargs: object) -> None:
        raise OperationalError("database is locked")  # SQLite past its busy timeout

    monkeypatch.setattr(submission, "submit_rows", locked)
    answer = owner_client.post(
        "/api/v1/jobs/", {"model": "iris", "input": iris_rows(1)[0]}, format="json"
    )
    assert (answer.status_code, answer["Retry-After"]) == (503, "5")
    assert answer.json()["code"] == "database_unavailable"


def test_two_files_in_one_request_are_refused(owner_client) -> None:
    uploads = []
    for name in ("a.csv", "b.csv"):
        upload = io.BytesIO((",".join(IRIS_FEATURES) + "\n1,2,3,4\n").encode())
        upload.name = name
        uploads.append(upload)
    answer = owner_client.post("/api/v1/jobs/", {"model": "iris", "file": uploads})
    assert answer.status_code == 400
    assert (answer.json()["field"], answer.json()["detail"]) == ("file", "Give one value, not 2.")
    assert PredictionJob.objects.count() == 0


def test_another_users_job_is_404_everywhere_and_absent_from_their_list(owner_client) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    stranger = client_for(make_user("stranger"))
    assert stranger.get(f"/api/v1/jobs/{job_id}/").status_code == 404
    assert stranger.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 404
    assert stranger.post(f"/api/v1/jobs/{job_id}/retry/").status_code == 404
    assert stranger.get(f"/api/v1/jobs/{job_id}/result/").status_code == 404
    assert stranger.get(f"/api/v1/jobs/{job_id}/result/?format=csv").status_code == 404
    assert stranger.get("/api/v1/jobs/").json()["count"] == 0
    assert PredictionJob.objects.get(pk=job_id).status == Status.QUEUED


def test_staff_see_every_job(owner_client) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    staff = client_for(make_user("boss", staff=True))
    assert staff.get(f"/api/v1/jobs/{job_id}/").status_code == 200
    assert staff.get("/api/v1/jobs/").json()["count"] == 1


def test_staff_without_the_change_permission_cannot_cancel_or_retry_anothers_job(
    owner_client,
) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    staff = client_for(make_user("boss", staff=True))  # sees every job, may change none
    for action in ("cancel", "retry"):
        answer = staff.post(f"/api/v1/jobs/{job_id}/{action}/")
        assert (answer.status_code, answer.json()["code"]) == (403, "permission_denied")
    assert PredictionJob.objects.get(pk=job_id).status == Status.QUEUED


def test_staff_with_the_change_permission_cancel_and_retry_anothers_job(owner_client) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    boss = with_permissions(make_user("boss", staff=True), "change_predictionjob")
    staff = client_for(boss)
    assert staff.post(f"/api/v1/jobs/{job_id}/cancel/").json()["status"] == "cancelled"
    assert staff.post(f"/api/v1/jobs/{job_id}/retry/").json()["status"] == "queued"


def test_staff_without_the_change_permission_cancel_their_own_job() -> None:
    make_version()
    staff = client_for(make_user("boss", staff=True))
    job_id = post(staff, {"model": "iris", "inputs": iris_rows(1)})["id"]
    assert staff.post(f"/api/v1/jobs/{job_id}/cancel/").json()["status"] == "cancelled"


def test_anonymous_requests_are_refused() -> None:
    assert APIClient().get("/api/v1/jobs/").status_code == 401


def test_the_list_filters_by_status_and_model(owner_client) -> None:
    make_version("iris-two")
    first = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    post(owner_client, {"model": "iris-two", "inputs": iris_rows(1)})
    running.cancel(PredictionJob.objects.filter(pk=first))
    listed = owner_client.get("/api/v1/jobs/?status=cancelled").json()
    assert [job["id"] for job in listed["results"]] == [first]
    assert owner_client.get("/api/v1/jobs/?model=iris-two").json()["count"] == 1
    assert owner_client.get("/api/v1/jobs/?created_after=2100-01-01T00:00:00Z").json()["count"] == 0


def test_the_list_filters_by_model_version_and_by_several_statuses(owner_client) -> None:
    first = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    make_version()  # iris:2
    second = post(owner_client, {"model": "iris:2", "inputs": iris_rows(1)})["id"]
    running.cancel(PredictionJob.objects.filter(pk=first))

    def listed(query: str) -> list[str]:
        return [job["id"] for job in owner_client.get(f"/api/v1/jobs/?{query}").json()["results"]]

    assert listed("model=iris:1") == [first]
    assert listed("model=iris:2") == [second]
    assert listed("model=iris:3") == []
    assert sorted(listed("status=cancelled&status=queued")) == sorted([first, second])
    assert listed("status=cancelled") == [first]
    for query in ["model=iris:x", "model=iris@staging"]:
        answer = owner_client.get(f"/api/v1/jobs/?{query}")
        assert (answer.status_code, answer.json()["field"]) == (400, "model")


def test_owner_status_and_outputs_cannot_be_written(owner_client) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    answer = owner_client.patch(f"/api/v1/jobs/{job_id}/", {"status": "succeeded"}, format="json")
    assert answer.status_code == 405
    assert PredictionJob.objects.get(pk=job_id).status == Status.QUEUED


def test_cancel_then_retry_then_cancel_a_finished_job_is_a_conflict(owner_client) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    assert owner_client.post(f"/api/v1/jobs/{job_id}/retry/").json()["code"] == "not_retryable"
    cancelled = owner_client.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    again = owner_client.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert (again.status_code, again.json()["code"]) == (409, "not_cancellable")
    retried = owner_client.post(f"/api/v1/jobs/{job_id}/retry/")
    assert retried.json()["status"] == "queued"


def test_a_result_before_success_is_a_conflict_in_json(owner_client) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    answer = owner_client.get(f"/api/v1/jobs/{job_id}/result/?format=csv")
    assert answer.status_code == 409
    assert answer.json()["code"] == "result_not_ready"


def test_wait_must_be_a_number(owner_client) -> None:
    answer = owner_client.post(
        "/api/v1/jobs/?wait=soon", {"model": "iris", "inputs": iris_rows(1)}, format="json"
    )
    assert (answer.status_code, answer.json()["field"]) == (400, "wait")


def test_a_job_renders_as_drfs_own_serializer_walk_would(owner_client) -> None:
    from rest_framework import serializers

    from predictions.api.serializers import JobDetailSerializer, JobSerializer

    answer = post(owner_client, {"model": "iris", "inputs": iris_rows(2)})
    job = PredictionJob.objects.get(pk=answer["id"])
    running.claim(job.pk, "t")
    running.fail(job.pk, "scoring_failed", "boom")
    job.refresh_from_db()
    for serializer_class in (JobSerializer, JobDetailSerializer):
        serializer = serializer_class(job)
        generic = serializers.ModelSerializer.to_representation(serializer, job)
        assert serializer.to_representation(job) == generic
        assert list(serializer.to_representation(job)) == serializer_class.Meta.fields


def error_of(answer) -> tuple[int, str, str | None]:
    """What a client reads from an error: the status, the code and the field, in our shape."""
    body = answer.json()
    assert set(body) <= {"detail", "code", "field"} and body["detail"], body
    return answer.status_code, body["code"], body.get("field")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "iris", "input": iris_rows(1)[0], "priority": 12}, "priority"),
        ({"model": "iris", "input": iris_rows(1)[0], "foo": 1}, "foo"),
        ({"input": iris_rows(1)[0]}, "model"),
        ({"model": "iris", "inputs": [], "input": {}}, "inputs"),
        (
            {"model": "iris", "input": iris_rows(1)[0], "idempotency_key": "k" * 201},
            "idempotency_key",
        ),
    ],
)
def test_a_validation_error_answers_detail_code_and_field(owner_client, body, field) -> None:
    answer = owner_client.post("/api/v1/jobs/", body, format="json")
    assert error_of(answer) == (400, "invalid", field)


def test_an_empty_idempotency_key_means_no_key(owner_client) -> None:
    body = {"model": "iris", "input": iris_rows(1)[0], "idempotency_key": ""}
    first, second = post(owner_client, body), post(owner_client, body)
    assert (first["http"], second["http"]) == (201, 201)
    assert first["id"] != second["id"]


@pytest.mark.parametrize(
    "query",
    [
        "created_before=0001-01-01T00:00:00%2B01:00",
        "created_after=9999-12-31T23:59:59-01:00",
    ],
)
def test_a_date_filter_beyond_the_calendar_is_a_400_naming_it(owner_client, query) -> None:
    answer = owner_client.get(f"/api/v1/jobs/?{query}")
    assert error_of(answer) == (400, "invalid", query.split("=")[0])


@pytest.mark.parametrize("page", ["abc", "0", "-1", "1.5"])
def test_a_page_that_is_not_a_page_number_is_a_400(owner_client, page) -> None:
    answer = owner_client.get(f"/api/v1/jobs/?page={page}")
    assert error_of(answer) == (400, "bad_input", "page")


def test_a_page_past_the_end_is_a_404_as_in_drf(owner_client) -> None:
    post(owner_client, {"model": "iris", "inputs": iris_rows(1)})
    assert owner_client.get("/api/v1/jobs/?page=1").status_code == 200
    assert owner_client.get("/api/v1/jobs/?page=last").status_code == 200
    assert error_of(owner_client.get("/api/v1/jobs/?page=2")) == (404, "not_found", None)


@pytest.mark.parametrize("wanted", ["bogus", "CSV", "xml"])
def test_an_unknown_result_format_is_a_400_naming_the_formats(owner_client, wanted) -> None:
    job_id = post(owner_client, {"model": "iris", "inputs": iris_rows(1)})["id"]
    answer = owner_client.get(f"/api/v1/jobs/{job_id}/result/?format={wanted}")
    assert error_of(answer) == (400, "bad_input", "format")
    assert "json, csv, parquet" in answer.json()["detail"]


@pytest.mark.parametrize("ref", ["iris:١", "iris:１"])  # Arabic-Indic and full-width one
def test_a_version_number_is_ascii_digits_only(owner_client, ref) -> None:
    answer = owner_client.post(
        "/api/v1/jobs/", {"model": ref, "input": iris_rows(1)[0]}, format="json"
    )
    assert error_of(answer)[:2] == (404, "unknown_model")
    assert PredictionJob.objects.count() == 0


def end_backend(pid: int) -> None:
    """End one PostgreSQL backend, as a restart, a failover or an idle timeout would."""
    with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


@pytest.mark.postgres_only  # ends the connection's server process
@pytest.mark.django_db(transaction=True)  # the request's own connection, not a test transaction
def test_a_wait_whose_connection_was_ended_meanwhile_still_answers_the_job(
    owner_client, monkeypatch
) -> None:
    # The job is committed before the wait; a connection the server ended during it made the
    # answer a 503 "try again", and a client without an idempotency key submitted it twice.
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: None)  # no worker
    wait = waiting.wait_until_finished

    def connection_ended_during(job: PredictionJob, seconds: float, **kwargs) -> PredictionJob:
        end_backend(connection.connection.info.backend_pid)
        return wait(job, seconds, **kwargs)

    monkeypatch.setattr(waiting, "wait_until_finished", connection_ended_during)
    answer = post_waiting(owner_client)
    assert (answer.status_code, answer.json()["status"]) == (201, "queued")
    assert PredictionJob.objects.count() == 1


def post_waiting(client: APIClient) -> object:
    body = {"model": "iris", "inputs": iris_rows(1)}
    return client.post("/api/v1/jobs/?wait=0.2", body, format="json")


@pytest.mark.postgres_only  # ends the connection's server process
@pytest.mark.django_db(transaction=True)
def test_a_repeat_answered_by_an_announcement_after_its_connection_ended_still_answers(
    owner_client, monkeypatch
) -> None:
    # The same key again: the first job, read without its version and owner, which the
    # answer then reads, after a wait ended by the job's announcement.
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: None)  # no worker
    body = {"model": "iris", "inputs": iris_rows(1), "idempotency_key": "k-ended"}
    first = owner_client.post("/api/v1/jobs/", body, format="json").json()
    finished = json.dumps([{"id": first["id"], "state": {"status": "succeeded"}}]).encode()
    wait = waiting.wait_until_finished

    def connection_ended_then_announced(job: PredictionJob, seconds: float, **kwargs) -> object:
        backend = connection.connection.info.backend_pid

        def during_the_wait() -> None:  # after the wait's own look at the row
            end_backend(backend)
            waiting._waiting.deliver(finished)

        threading.Timer(0.5, during_the_wait).start()
        return wait(job, seconds, **kwargs)

    monkeypatch.setattr(waiting, "wait_until_finished", connection_ended_then_announced)
    again = owner_client.post("/api/v1/jobs/?wait=5", body, format="json")
    connection.close()  # the one the server ended: a server's next request starts anew
    assert (again.status_code, again.json()["id"]) == (200, first["id"])
