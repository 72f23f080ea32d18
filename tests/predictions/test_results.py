"""Results as a client downloads them: CSV escaped for spreadsheets, JSON and Parquet exact."""

import io
import json
from uuid import uuid4

import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from predictions import batching, retention, running, submission
from predictions.api import results
from predictions.models import BatchChunk, PredictionJob
from tests.base import make_user
from tests.builders import IRIS_FEATURES, in_process_predictions, iris_rows, make_version

pytestmark = pytest.mark.django_db

IDS = ["007", "=cmd", "-5", "'=x", "TRUE", "NA", "", "1e3", "'plain"]
LABELS = np.array(['=HYPERLINK("x")', "setosa", "'=q"])


def spread_rows() -> list[dict[str, float]]:
    """One iris row per id, from all three classes."""
    return iris_rows(150)[:: 150 // len(IDS)][: len(IDS)]


def labelled_version(labels: np.ndarray = LABELS) -> None:
    """An iris classifier whose class labels a spreadsheet would run or alter."""
    data = load_iris()
    make_version(estimator=LogisticRegression(max_iter=500).fit(data.data, labels[data.target]))


def expected_labels(rows: list[dict[str, float]], labels: np.ndarray = LABELS) -> list[str]:
    estimator = LogisticRegression(max_iter=500).fit(load_iris().data, labels[load_iris().target])
    return estimator.predict(np.array([[row[f] for f in IRIS_FEATURES] for row in rows])).tolist()


def scored_batch(rows: list[dict[str, float]], ids: list[str] | None) -> PredictionJob:
    """The rows scored as a CSV file, with `ids` as its id column "key" (None: no id column)."""
    columns = pd.DataFrame(rows).to_dict("list")
    text = pd.DataFrame(columns if ids is None else {"key": ids, **columns}).to_csv(index=False)
    upload = SimpleUploadedFile("rows.csv", text.encode())
    id_column = "" if ids is None else "key"
    job, _ = submission.submit_file(
        make_user(), "iris", upload, size=upload.size, id_column=id_column
    )
    batching.start(job.pk, "t")
    for chunk_id in BatchChunk.objects.filter(job=job).values_list("pk", flat=True):
        batching.score_chunk(chunk_id)
    job.refresh_from_db()
    return job


def scored_single(rows: list[dict[str, float]]) -> PredictionJob:
    job, _ = submission.submit_rows(make_user(), "iris", rows)
    claimed = running.claim_many([(str(job.pk), str(uuid4()))])
    for each in claimed:
        each.task_id = PredictionJob.objects.get(pk=each.pk).task_id
    running.score_jobs(claimed)
    job.refresh_from_db()
    return job


def download(job: PredictionJob, format_: str) -> bytes:
    client = APIClient()
    client.force_authenticate(job.owner)
    answer = client.get(f"/api/v1/jobs/{job.pk}/result/?format={format_}")
    assert answer.status_code == 200, answer.content
    return b"".join(answer.streaming_content) if answer.streaming else answer.content


@pytest.mark.parametrize(
    "classes", [LABELS, np.array(["007", "08", "1e3"])], ids=["formulas", "number-like"]
)
def test_a_batch_result_gives_back_ids_and_labels_exactly_in_json_and_parquet(classes) -> None:
    labelled_version(classes)
    rows = spread_rows()
    job = scored_batch(rows, IDS)
    labels = expected_labels(rows, classes)
    assert len(set(labels)) == 3

    records = json.loads(download(job, "json"))
    table = pd.read_parquet(io.BytesIO(download(job, "parquet")))

    assert [record["key"] for record in records] == IDS
    assert [record["prediction"] for record in records] == labels
    assert table["key"].tolist() == IDS
    assert table["prediction"].tolist() == labels


@override_settings(BATCH_CHUNK_ROWS=3)
def test_without_an_id_column_each_result_row_names_its_input_row() -> None:
    # Failed rows are left out of the result: lined up with the input by position, every
    # prediction after the first failed row was put beside the wrong input, and nothing said.
    version = make_version()
    rows = iris_rows(7)
    for bad in (1, 4):
        rows[bad]["petal_width"] = float("nan")
    job = scored_batch(rows, ids=None)
    assert (job.rows_done, job.rows_failed) == (7, 2)  # done counts the failed ones
    kept = [0, 2, 3, 5, 6]

    table = pd.read_parquet(io.BytesIO(download(job, "parquet")))
    records = json.loads(download(job, "json"))
    csv_text = download(job, "csv")
    csv_rows = pd.read_csv(io.BytesIO(csv_text))["row"].tolist()
    errors = pd.read_csv(job.error_file.path)["row"].tolist()

    assert table["row"].tolist() == [record["row"] for record in records] == csv_rows
    assert csv_rows == [at + 1 for at in kept]  # numbered as the error file numbers rows
    assert errors == [2, 5]
    assert csv_text.splitlines()[1].startswith(b"1,")  # a number, not quoted text
    expected = in_process_predictions(version, [rows[at] for at in kept])
    assert table["prediction"].tolist() == expected.tolist()


def test_an_id_longer_than_a_read_block_is_scored_and_given_back() -> None:
    make_version()
    huge = "x" * (3 * 1024 * 1024)  # pyarrow's blocks are 1 MiB: it refused such a line
    job = scored_batch(iris_rows(3), ["a", huge, "c"])
    assert job.status == "succeeded", job.error_message  # failed the whole file (bad_file)

    records = json.loads(download(job, "json"))  # a 500
    table = pd.read_parquet(io.BytesIO(download(job, "parquet")))

    assert [record["key"] for record in records] == table["key"].tolist() == ["a", huge, "c"]


def test_a_batch_result_of_number_labels_gives_numbers() -> None:
    make_version()  # iris classes 0, 1, 2
    job = scored_batch(spread_rows(), IDS)
    predictions = [record["prediction"] for record in json.loads(download(job, "json"))]
    assert {type(value) for value in predictions} == {int}


def test_a_batch_result_of_true_false_labels_gives_booleans_as_a_single_job_does() -> None:
    # Written to CSV as true and false, they came back as the text "true" and "false": not
    # the labels, nor a key of the probabilities ("True", "False"), as a single job gives them.
    classes = np.array([False, True, True])
    labelled_version(classes)
    rows = spread_rows()
    single = expected_labels(rows, classes)  # what a single job's outputs hold
    assert set(single) == {False, True}

    job = scored_batch(rows, IDS)
    records = json.loads(download(job, "json"))
    table = pd.read_parquet(io.BytesIO(download(job, "parquet")))

    assert [record["prediction"] for record in records] == single
    assert table["prediction"].tolist() == single
    assert set(records[0]["probabilities"]) == {"False", "True"}


def test_a_batch_csv_escapes_what_a_spreadsheet_would_run() -> None:
    labelled_version()
    job = scored_batch(spread_rows(), IDS)

    result = pd.read_csv(io.BytesIO(download(job, "csv")), dtype=str, keep_default_na=False)

    assert result["key"].tolist() == [
        "007", "'=cmd", "'-5", "''=x", "TRUE", "NA", "", "1e3", "''plain"
    ]  # fmt: skip
    assert set(result["prediction"]) <= {'\'=HYPERLINK("x")', "setosa", "''=q"}


def test_a_single_jobs_csv_escapes_text_labels_too() -> None:
    labelled_version()
    rows = spread_rows()
    job = scored_single(rows)
    assert job.outputs[0]["prediction"] in LABELS  # the JSON result is exact

    result = pd.read_csv(io.BytesIO(download(job, "csv")), dtype=str, keep_default_na=False)

    escaped = {'=HYPERLINK("x")': '\'=HYPERLINK("x")', "setosa": "setosa", "'=q": "''=q"}
    assert result["prediction"].tolist() == [escaped[label] for label in expected_labels(rows)]


def test_a_batch_without_failed_rows_has_an_error_file_of_its_header_alone() -> None:
    make_version()
    job = scored_batch(iris_rows(3), ["a", "b", "c"])
    assert job.rows_failed == 0
    client = APIClient()
    client.force_authenticate(job.owner)

    answer = client.get(f"/api/v1/jobs/{job.pk}/errors/")

    assert answer.status_code == 200
    assert b"".join(answer.streaming_content if answer.streaming else [answer.content]) == (
        b"row,key,error\n"
    )


def test_failed_rows_are_csv_by_default_and_json_on_request() -> None:
    make_version()
    rows = iris_rows(4)
    text = pd.DataFrame({"key": ["ok", "=cmd", "007", "fine"], **pd.DataFrame(rows)}).to_csv(
        index=False
    )
    lines = text.splitlines()
    lines[2] = lines[2].replace(str(rows[1]["sepal_length"]), "abc", 1)  # row 2: "=cmd"
    lines[3] = lines[3].rsplit(",", 1)[0]  # row 3: "007", a cell short
    upload = SimpleUploadedFile("rows.csv", ("\n".join(lines) + "\n").encode())
    job, _ = submission.submit_file(make_user(), "iris", upload, size=upload.size, id_column="key")
    batching.start(job.pk, "t")
    for chunk_id in BatchChunk.objects.filter(job=job).values_list("pk", flat=True):
        batching.score_chunk(chunk_id)
    client = APIClient()
    client.force_authenticate(job.owner)

    answer = client.get(f"/api/v1/jobs/{job.pk}/errors/?format=json")

    assert answer.status_code == 200
    assert [(row["row"], row["key"]) for row in answer.json()] == [(2, "=cmd"), (3, "007")]
    assert all(row["error"] for row in answer.json())
    default = client.get(f"/api/v1/jobs/{job.pk}/errors/")
    assert default["Content-Type"] == "text/csv; charset=utf-8"  # ids may be any text
    assert b"".join(default.streaming_content).startswith(b"row,key,error\n2,'=cmd,")


def test_a_batch_jobs_result_url_answers_csv_until_retention_purges_it() -> None:
    make_version()
    job = scored_batch(iris_rows(3), ["a", "b", "c"])
    client = APIClient()
    client.force_authenticate(job.owner)

    shown = client.get(f"/api/v1/jobs/{job.pk}/").json()
    assert shown["result_url"].endswith(f"/api/v1/jobs/{job.pk}/result/?format=csv")
    assert shown["purged_at"] is None
    assert client.get(shown["result_url"])["Content-Type"] == "text/csv; charset=utf-8"

    retention.purge_jobs([job.pk], timezone.now())
    purged = client.get(f"/api/v1/jobs/{job.pk}/").json()
    assert (purged["result_url"], purged["error_file_url"]) == (None, None)
    assert purged["purged_at"] is not None


@pytest.mark.parametrize(
    ("path", "format_"), [("result", "csv"), ("result", "json"), ("errors", "csv")]
)
def test_a_file_purged_while_its_download_starts_answers_410_not_500(
    monkeypatch, path, format_
) -> None:
    make_version()
    rows = iris_rows(3)
    rows[1]["sepal_length"] = float("nan")  # an empty cell: the job has an error file too
    job = scored_batch(rows, ["a", "b", "c"])
    client = APIClient()
    client.force_authenticate(job.owner)
    checked = {"result": "check_ready", "errors": "check_errors_ready"}[path]
    check = getattr(results, checked)

    def purged_right_after_the_check(job: PredictionJob) -> None:
        check(job)
        retention.purge_jobs([job.pk], timezone.now())  # between the check and the open

    monkeypatch.setattr(results, checked, purged_right_after_the_check)

    answer = client.get(f"/api/v1/jobs/{job.pk}/{path}/?format={format_}")

    assert answer.status_code == 410
    assert answer.json()["code"] == "result_purged"
