"""Awkward CSV uploads through a real worker: a clear error per bad row, a safe result file."""

import csv
import io

import pytest
from rest_framework.test import APIClient

from predictions.models import PredictionJob, Status
from tests.base import make_user
from tests.builders import IRIS_FEATURES, make_version
from tests.processes import wait_for

HEADER = "id," + ",".join(IRIS_FEATURES)


def upload_and_wait(content: bytes) -> PredictionJob:
    client = APIClient()
    client.force_authenticate(make_user())
    upload = io.BytesIO(content)
    upload.name = "rows.csv"
    answer = client.post(
        "/api/v1/jobs/", {"model": "iris", "file": upload, "id_column": "id"}, format="multipart"
    )
    assert answer.status_code == 201, answer.json()
    job_id = answer.json()["id"]
    wait_for(lambda: PredictionJob.objects.get(pk=job_id).is_finished, 30, "the batch job")
    return PredictionJob.objects.get(pk=job_id)


def read_csv(field) -> list[list[str]]:
    with field.open("rb") as stream:
        return list(csv.reader(io.StringIO(stream.read().decode("utf-8"))))


@pytest.mark.django_db(transaction=True)
def test_a_byte_order_mark_ragged_rows_and_bad_bytes_fail_only_their_rows(live_worker) -> None:
    make_version()
    lines = [
        HEADER,
        "a,5.1,3.5,1.4,0.2",
        "b,5.1,3.5",  # ragged: too few cells
        "c,6.0,2.9,4.5,1.5,9,9",  # ragged: too many
        "d,6.3,\xff\xfe,5.0,1.9",  # not UTF-8 (latin-1 bytes)
        "e,6.7,3.0,5.2,2.3",
    ]
    content = b"\xef\xbb\xbf" + "\n".join(lines).encode("latin-1") + b"\n"

    job = upload_and_wait(content)

    assert job.status == Status.SUCCEEDED, (job.error_code, job.error_message)
    assert job.rows_failed >= 2
    scored = read_csv(job.result_file)
    assert scored[0][0] == "id"  # the BOM did not become part of the first column's name
    assert {row[0] for row in scored[1:]} >= {"a", "e"}
    errors = read_csv(job.error_file)
    reasons = " ".join(row[-1] for row in errors[1:])
    assert "columns" in reasons  # each ragged line says what was wrong with it


@pytest.mark.django_db(transaction=True)
def test_formula_looking_ids_are_escaped_in_the_result_file(live_worker) -> None:
    make_version()
    hostile = ['=HYPERLINK("http://evil")', "+1+1", "-2", "@SUM(A1)", "plain"]
    lines = [HEADER] + [
        f'"{name.replace(chr(34), 2 * chr(34))}",5.1,3.5,1.4,0.2' for name in hostile
    ]

    job = upload_and_wait(("\n".join(lines) + "\n").encode())

    assert job.status == Status.SUCCEEDED
    ids = [row[0] for row in read_csv(job.result_file)[1:]]
    assert ids == ["'" + name for name in hostile[:4]] + ["plain"]


def post_file(content: bytes, name: str = "rows.csv", **fields: str):
    client = APIClient()
    client.force_authenticate(make_user())
    upload = io.BytesIO(content)
    upload.name = name
    return client.post("/api/v1/jobs/", {"model": "iris", "file": upload, **fields})


def scored_lines(lines: list[str]) -> PredictionJob:
    """The job of these CSV lines, once the live worker has scored it successfully."""
    answer = post_file(("\n".join(lines) + "\n").encode())
    assert answer.status_code == 201, answer.json()
    job_id = answer.json()["id"]
    wait_for(lambda: PredictionJob.objects.get(pk=job_id).is_finished, 30, "the batch job")
    job = PredictionJob.objects.get(pk=job_id)
    assert job.status == Status.SUCCEEDED, (job.error_code, job.error_message)
    return job


@pytest.mark.django_db
def test_a_csv_whose_lines_end_in_cr_alone_is_refused_at_upload() -> None:
    make_version()
    answer = post_file(b"sepal_length,sepal_width,petal_length,petal_width\r5.1,3.5,1.4,0.2\r")

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "bad_file"
    assert "CR" in answer.json()["detail"]


@pytest.mark.parametrize("name", ["row", "error"])
@pytest.mark.django_db
def test_an_id_column_named_as_an_error_file_column_is_refused_at_upload(name: str) -> None:
    # Accepted, its failed rows were listed under "row,row,error" (or "row,error,error"),
    # and as JSON the id overwrote the row's number (or the reason the id).
    make_version()
    answer = post_file(
        f"{name},{','.join(IRIS_FEATURES)}\na,5.1,3.5,1.4,0.2\n".encode(), id_column=name
    )

    assert answer.status_code == 400, answer.content
    assert (answer.json()["code"], answer.json()["field"]) == ("bad_input", "id_column")
    assert f"id column {name!r} has the name of a result column" in answer.json()["detail"]


@pytest.mark.django_db
def test_a_header_name_too_long_for_the_csv_reader_is_refused_at_upload() -> None:
    make_version()
    answer = post_file(("x" * 131_073 + "," + ",".join(IRIS_FEATURES) + "\n1,2,3,4,5\n").encode())

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "bad_file"
    assert "header" in answer.json()["detail"]


RAGGED = [
    "5.1,3.5,1.4,0.2",
    "abc,1,2,3",
    "1,2,3",
    "1,2,3,4,5",
    ",,,",
    "6.7,3.0,5.2,2.3",
]


@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted"])
@pytest.mark.django_db(transaction=True)
def test_lines_with_the_wrong_number_of_cells_are_failed_rows_named_by_their_row(
    live_worker, quoted: bool
) -> None:
    make_version()
    lines = [",".join(IRIS_FEATURES), *RAGGED]
    if quoted:  # a quote anywhere sends the file through the Parquet conversion
        lines[1] = '"5.1",3.5,1.4,0.2'
    job = scored_lines(lines)

    assert (job.rows_total, job.rows_done, job.rows_failed) == (6, 6, 4)
    assert len(read_csv(job.result_file)) == 1 + 2
    errors = read_csv(job.error_file)
    assert [row[0] for row in errors[1:]] == ["2", "3", "4", "5"]
    assert errors[1][2].startswith("sepal_length is not a number")
    assert "expected 4 columns, got 3" in errors[2][2]
    assert "expected 4 columns, got 5" in errors[3][2]
    assert errors[4][2] == "sepal_length is empty"


@pytest.mark.django_db(transaction=True)
def test_rows_of_a_later_chunk_keep_their_numbers_after_blank_and_ragged_lines(
    live_worker,
) -> None:
    make_version()  # the worker cuts plain files into chunks of 200 lines
    lines = [",".join(IRIS_FEATURES)] + ["5.1,3.5,1.4,0.2"] * 450
    lines[10] = ""  # blank: no row, but it keeps its place
    lines[20] = "1,2"
    lines[30] = "x,3.5,1.4,0.2"
    lines[420] = "6.0,,4.5,1.5"
    job = scored_lines(lines)

    assert (job.rows_total, job.rows_done, job.rows_failed) == (449, 449, 3)
    errors = read_csv(job.error_file)
    assert [(row[0], row[2]) for row in errors[1:]] == [
        ("20", "unreadable line: expected 4 columns, got 2"),
        ("30", "sepal_length is not a number: 'x'"),
        ("420", "sepal_width is empty"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_bad_byte_in_the_id_column_fails_only_its_row(live_worker) -> None:
    make_version()
    content = (HEADER + "\na,5.1,3.5,1.4,0.2\n").encode() + b"b\xff,6.3,2.9,5.0,1.9\n"
    content += b"c,6.7,3.0,5.2,2.3\n"

    job = upload_and_wait(content)

    assert job.status == Status.SUCCEEDED, (job.error_code, job.error_message)
    assert (job.rows_total, job.rows_failed) == (3, 1)
    assert [row[0] for row in read_csv(job.result_file)[1:]] == ["a", "c"]
    [error] = read_csv(job.error_file)[1:]
    assert error[0] == "2"
    assert error[1] == "b\ufffd"
    assert "id is not UTF-8 text" in error[2]


@pytest.mark.parametrize("cell", ["nan", "NaN", "NA"])
@pytest.mark.django_db(transaction=True)
def test_a_nan_text_cell_is_reported_as_not_a_number(live_worker, cell: str) -> None:
    make_version()
    content = f"{HEADER}\na,5.1,3.5,1.4,0.2\nb,{cell},2.9,5.0,1.9\n".encode()

    job = upload_and_wait(content)

    assert job.status == Status.SUCCEEDED, (job.error_code, job.error_message)
    [error] = read_csv(job.error_file)[1:]
    assert error[:2] == ["2", "b"]
    assert error[2].startswith("sepal_length is not a number: ")  # not "is empty"


@pytest.mark.parametrize("cell", ["\uff11", "\u0663", "1_000"], ids=["fullwidth", "arabic", "_"])
@pytest.mark.django_db(transaction=True)
def test_a_cell_only_python_reads_as_a_number_is_reported_with_its_column(
    live_worker, cell: str
) -> None:
    # float() takes other scripts' digits and underscores; the file's parser does not, so the
    # row failed as "row cannot be scored", naming no column.
    make_version()
    content = f"{HEADER}\na,5.1,3.5,1.4,0.2\nb,6.3,{cell},5.0,1.9\n".encode()

    job = upload_and_wait(content)

    assert job.status == Status.SUCCEEDED, (job.error_code, job.error_message)
    [error] = read_csv(job.error_file)[1:]
    assert error == ["2", "b", f"sepal_width is not a number: {cell!r}"]


@pytest.mark.parametrize(("quote", "ends"), [("", ","), ("", ",,"), ('"', ",,")])
@pytest.mark.django_db(transaction=True)
def test_columns_with_no_name_are_ignored_with_an_id_column_as_without(
    live_worker, quote: str, ends: str
) -> None:
    # A spreadsheet's export often ends each line in a comma: a last column with no name. It
    # was ignored without an id column, but with one refused as "unknown column(s) ".
    make_version()
    rows = [f"{quote}a{quote},5.1,3.5,1.4,0.2", f"{quote}b{quote},6.3,2.9,5.0,1.9"]
    content = "".join(f"{line}{ends}\n" for line in [HEADER, *rows]).encode()

    job = upload_and_wait(content)

    assert job.status == Status.SUCCEEDED, (job.error_code, job.error_message)
    assert [row[0] for row in read_csv(job.result_file)] == ["id", "a", "b"]
