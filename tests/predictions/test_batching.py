"""Batch jobs as plain functions: plan chunks, score them, cancel between them, merge once."""

import errno
import io
import os
import resource
import signal
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.test import override_settings
from django_celery_results.models import TaskResult
from rest_framework.test import APIClient
from sklearn.datasets import load_iris
from sklearn.svm import LinearSVC

from mlsite import dbretry, sending
from mlsite.leases import Heartbeat
from predictions import (
    batchfiles,
    batching,
    heartbeat,
    running,
    submission,
    taskresults,
    waiting,
)
from predictions.models import BatchChunk, ChunkStatus, PredictionJob, Status
from tests.base import make_user
from tests.builders import IRIS_FEATURES, in_process_predictions, iris_rows, make_version
from tests.outages import answer_lost_at_call, fails_at_call

pytestmark = pytest.mark.django_db


def submit_csv(text: str, id_column: str = "") -> PredictionJob:
    upload = SimpleUploadedFile("rows.csv", text.encode())
    job, _ = submission.submit_file(
        make_user(), "iris", upload, size=upload.size, id_column=id_column
    )
    return job


def iris_csv(count: int) -> str:
    return pd.DataFrame(iris_rows(count)).to_csv(index=False)


def chunk_ids(job: PredictionJob) -> list[int]:
    return list(BatchChunk.objects.filter(job=job).values_list("pk", flat=True))


def run_whole(job: PredictionJob) -> None:
    """Plan the job and score each of its chunks, in this process (the last one merges)."""
    batching.start(job.pk, "t")
    for chunk_id in chunk_ids(job):
        batching.score_chunk(chunk_id)


@pytest.fixture
def unsent_with_quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No message sent (a live worker left by an earlier test would take a committed job),
    and dbretry's delays cut short."""
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: None)
    monkeypatch.setattr(dbretry, "DELAYS", (0.01,))


def planned_in_two_chunks(task_id: str = "t") -> tuple[PredictionJob, int, int]:
    """A job of 15 rows, planned (BATCH_CHUNK_ROWS=10): the job and its two chunks' ids."""
    make_version()
    job = submit_csv(iris_csv(15))
    batching.start(job.pk, task_id)
    first, second = sorted(chunk_ids(job))
    return job, first, second


def assert_succeeded_with_15_rows(job: PredictionJob) -> None:
    job.refresh_from_db()
    assert (job.status, job.rows_done) == (Status.SUCCEEDED, 15)
    assert len(pd.read_csv(job.result_file.path)) == 15


@override_settings(BATCH_CHUNK_ROWS=10)
def test_a_batch_is_planned_in_row_ranges_and_merged_once_by_the_last_chunk() -> None:
    version = make_version()
    job = submit_csv(iris_csv(35))
    batching.start(job.pk, "t")
    ranges = list(BatchChunk.objects.filter(job=job).values_list("start_row", "stop_row"))
    assert ranges == [(0, 10), (10, 20), (20, 30), (30, 35)]

    for chunk_id in reversed(chunk_ids(job)):
        batching.score_chunk(chunk_id)
        assert batching.score_chunk(chunk_id)["skipped"]  # the same message again: no-op

    job.refresh_from_db()
    assert (job.status, job.rows_done, job.rows_failed) == (Status.SUCCEEDED, 35, 0)
    result = pd.read_csv(job.result_file.path)
    assert result["prediction"].tolist() == in_process_predictions(version, iris_rows(35)).tolist()
    assert not batching.work_dir(job.pk).exists()


@override_settings(BATCH_CHUNK_ROWS=10)
def test_a_chunk_is_done_only_with_its_rows_counted_and_its_retry_takes_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job, first, second = planned_in_two_chunks()
    # The chunk renews its job's lease first, then counts its rows: the database goes then.
    monkeypatch.setattr(running, "lease_until", fails_at_call(running.lease_until, 2))
    with pytest.raises(OperationalError):
        batching.score_chunk(first, "chunk-task")

    job.refresh_from_db()
    assert (job.status, job.rows_done) == (Status.RUNNING, 0)
    assert BatchChunk.objects.get(pk=first).status == ChunkStatus.RUNNING
    # A second copy of the message, or another task, leaves the running chunk alone...
    assert "skipped" in batching.score_chunk(first, "chunk-task")
    assert "skipped" in batching.score_chunk(first, "other-task", retrying=True)
    # ...and the task's own retry scores it without waiting for the job's lease.
    assert batching.score_chunk(first, "chunk-task", retrying=True)["rows"] == 10
    batching.score_chunk(second, "second-task")
    assert_succeeded_with_15_rows(job)


@override_settings(BATCH_CHUNK_ROWS=10)
def test_a_merge_cut_short_by_the_database_is_done_by_the_chunk_tasks_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job, first, second = planned_in_two_chunks()
    batching.score_chunk(first, "first-task")
    with monkeypatch.context() as patched:
        patched.setattr(batching, "merge_if_complete", fails_at_call(batching.merge_if_complete))
        with pytest.raises(OperationalError):
            batching.score_chunk(second, "second-task")

    assert BatchChunk.objects.get(pk=second).status == ChunkStatus.DONE
    batching.score_chunk(second, "second-task")  # a second copy of the message: no merge
    job.refresh_from_db()
    assert (job.status, job.rows_done) == (Status.RUNNING, 15)
    batching.score_chunk(second, "second-task", retrying=True)
    assert_succeeded_with_15_rows(job)


@pytest.mark.django_db(transaction=True)  # the retry closes the connection, as after an outage
@override_settings(BATCH_CHUNK_ROWS=10)
def test_the_merge_that_won_finishes_its_job_through_a_brief_database_outage(
    monkeypatch: pytest.MonkeyPatch, unsent_with_quick_retries: None
) -> None:
    job, first, second = planned_in_two_chunks("batch-task")
    batching.score_chunk(first)
    monkeypatch.setattr(taskresults, "record_done", fails_at_call(taskresults.record_done))
    batching.score_chunk(second)

    assert_succeeded_with_15_rows(job)
    assert TaskResult.objects.get(task_id="batch-task").status == "SUCCESS"


@pytest.mark.postgres  # a write is known again by its timestamp, as each database stores it
@pytest.mark.django_db(transaction=True)  # the retry closes the connection, as after an outage
@override_settings(BATCH_CHUNK_ROWS=10)
def test_a_merge_whose_finish_lost_its_answer_still_announces_the_job(
    monkeypatch: pytest.MonkeyPatch, unsent_with_quick_retries: None
) -> None:
    announced: list[str] = []
    monkeypatch.setattr(waiting, "announce_finished", lambda done: announced.extend(map(str, done)))
    job, first, second = planned_in_two_chunks("batch-task")
    batching.score_chunk(first)
    monkeypatch.setattr(batching, "_finish", answer_lost_at_call(batching._finish))
    batching.score_chunk(second)

    assert_succeeded_with_15_rows(job)
    assert announced == [str(job.pk)]  # a request waiting for it is answered now


@override_settings(BATCH_CHUNK_ROWS=10)
def test_a_plan_cut_short_by_the_database_is_made_again_by_the_tasks_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_version()
    job = submit_csv(iris_csv(15))
    real_bulk_create = BatchChunk.objects.bulk_create

    def chunks_written_then_the_database_goes(*args: object, **kwargs: object) -> object:
        real_bulk_create(*args, **kwargs)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(BatchChunk.objects, "bulk_create", chunks_written_then_the_database_goes)
    with pytest.raises(OperationalError):
        batching.start(job.pk, "batch-task")
    monkeypatch.undo()

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.RUNNING, 1)
    assert chunk_ids(job) == []  # no plan without its row count
    assert "skipped" in batching.start(job.pk, "batch-task")  # a second copy of the message
    assert batching.start(job.pk, "batch-task", retrying=True)["chunks"] == 2
    for chunk_id in chunk_ids(job):
        batching.score_chunk(chunk_id)

    job.refresh_from_db()
    assert (job.status, job.rows_done, job.attempts) == (Status.SUCCEEDED, 15, 1)


@override_settings(BATCH_CHUNK_ROWS=10)
def test_cancel_is_honoured_before_each_chunk_starts() -> None:
    make_version()
    job = submit_csv(iris_csv(40))
    batching.start(job.pk, "t")
    first, second, *rest = chunk_ids(job)
    batching.score_chunk(first)
    batching.score_chunk(second)

    running.cancel(PredictionJob.objects.filter(pk=job.pk))
    for chunk_id in rest:
        batching.score_chunk(chunk_id)

    job.refresh_from_db()
    assert (job.status, job.rows_done) == (Status.CANCELLED, 20)
    assert not job.result_file
    assert BatchChunk.objects.filter(job=job, status=ChunkStatus.PENDING).count() == 2


@override_settings(BATCH_CHUNK_ROWS=2)
@pytest.mark.parametrize("first", ["a", '"a"'], ids=["byte ranges", "quoted: converted"])
def test_unreadable_rows_and_lines_are_counted_and_reported_with_their_reason(first) -> None:
    make_version()
    header = "key," + ",".join(IRIS_FEATURES)
    text = f"\ufeff{header}\n{first},1,2,3,4\n@b,1,inf,3,4\nc,1,2\nd,1,2,3,4\n"
    job = submit_csv(text, id_column="key")
    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.rows_total, job.rows_failed) == (Status.SUCCEEDED, 4, 2)
    errors = pd.read_csv(job.error_file.path, dtype=str, keep_default_na=False)
    assert errors.columns.tolist() == ["row", "key", "error"]
    assert errors.iloc[0].tolist() == ["2", "'@b", "sepal_width must be a finite number"]
    assert errors.iloc[1].tolist() == ["3", "c", "unreadable line: expected 5 columns, got 3"]
    assert pd.read_csv(job.result_file.path)["key"].tolist() == ["a", "d"]


def test_a_file_over_the_row_cap_fails_with_too_many_rows() -> None:
    make_version()
    job = submit_csv(iris_csv(30))
    with override_settings(MAX_FILE_ROWS=20):
        batching.start(job.pk, "t")
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "too_many_rows")


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-x", "'-x"),
        ("@a", "'@a"),
        ("\tx", "'\tx"),
        ("ok", "ok"),
        ("'x", "''x"),
    ],
)
def test_text_cells_that_a_spreadsheet_would_run_are_escaped_and_can_be_read_back(
    text, escaped
) -> None:
    assert batchfiles.escape_formula(text) == escaped
    assert batchfiles.unescape_formula(escaped) == text


def test_string_labels_are_escaped_in_part_files(tmp_path) -> None:
    part = tmp_path / "part.csv"
    batchfiles.write_part(part, None, np.array(["=cmd", "ok"]), None, ["prediction"])
    assert pd.read_csv(part, header=None)[0].tolist() == ["'=cmd", "ok"]


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 7, 50])
@pytest.mark.parametrize("ending", ["\n", "", "\n\n"])
def test_plain_csv_ranges_are_whole_lines_that_cover_the_file_once(
    tmp_path, monkeypatch, rows_per_chunk, ending
) -> None:
    monkeypatch.setattr(batchfiles, "SCAN_BLOCK_BYTES", 16)  # cuts fall inside and across blocks
    lines = [f"{i},{i * 0.5}" for i in range(23)]
    source = tmp_path / "rows.csv"
    source.write_bytes(("\ufeffa, b\n" + "\n".join(lines) + ending).encode())

    plan = batchfiles.plan_csv_ranges(source, rows_per_chunk, max_rows=100)

    assert plan is not None and plan.columns == ["a", "b"]
    data = source.read_bytes()
    texts = [data[span.start_byte : span.stop_byte].decode() for span in plan.ranges]
    assert "".join(texts).split("\n")[: len(lines)] == lines
    assert all(text.endswith("\n") for text in texts[:-1])
    assert [span.stop_row - span.start_row for span in plan.ranges[:-1]] == [rows_per_chunk] * (
        len(plan.ranges) - 1
    )
    assert plan.rows == len(lines) + (ending == "\n\n")  # a blank line counts until parsed


@pytest.mark.parametrize("kernel", ["copies", "refuses part-way", "has no copy_file_range"])
def test_a_merged_file_is_the_header_then_each_part_in_order(tmp_path, monkeypatch, kernel) -> None:
    parts = []
    for index in range(3):
        parts.append(tmp_path / f"{index:06d}.csv")
        parts[-1].write_bytes(f"{index},a\n{index},b\n".encode() * 1000)
    if kernel == "refuses part-way":  # another filesystem (EXDEV), after a first piece
        copy_file_range = os.copy_file_range
        pieces = []

        def one_piece_then_refuse(source: int, target: int, count: int) -> int:
            if pieces:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            pieces.append(count)
            return copy_file_range(source, target, 10)

        monkeypatch.setattr(os, "copy_file_range", one_piece_then_refuse)
    elif kernel == "has no copy_file_range":  # not Linux
        monkeypatch.delattr(os, "copy_file_range")
    merged = tmp_path / "result.csv"

    batchfiles.concatenate(merged, ["id", "prediction"], parts)

    assert merged.read_bytes() == b"id,prediction\n" + b"".join(p.read_bytes() for p in parts)


@pytest.mark.parametrize("kernel", ["copies", "has no copy_file_range"])
def test_a_merge_that_runs_out_of_room_fails_rather_than_keep_a_short_result(
    tmp_path, monkeypatch, kernel
) -> None:
    parts = []
    for index in range(3):
        parts.append(tmp_path / f"{index:06d}.csv")
        parts[-1].write_bytes(f"{index},a\n".encode() * 5000)
    if kernel == "has no copy_file_range":
        monkeypatch.delattr(os, "copy_file_range")
    merged = tmp_path / "result.csv"
    room = len(b"id,prediction\n") + sum(p.stat().st_size for p in parts) - 100
    child = os.fork()  # the limit on file size, a full disk's stand-in, is the process's
    if child == 0:
        code = 0
        try:
            signal.signal(
                signal.SIGXFSZ, signal.SIG_IGN
            )  # a write past it is cut short, then EFBIG
            resource.setrlimit(
                resource.RLIMIT_FSIZE, (room, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
            )
            batchfiles.concatenate(merged, ["id", "prediction"], parts)
        except OSError:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 3  # was 0: the last part's write cut short
    assert not merged.exists()


def test_a_csv_with_quotes_is_not_cut_by_lines(tmp_path) -> None:
    source = tmp_path / "rows.csv"
    source.write_text('key,a\n"two\nlines",1\n')
    assert batchfiles.plan_csv_ranges(source, 1, max_rows=100) is None


@override_settings(BATCH_CHUNK_ROWS=3)
@pytest.mark.parametrize("shape", ["quoted ids with newlines", "blank lines"])
def test_quoted_cells_and_blank_lines_are_scored_like_plain_rows(shape) -> None:
    version = make_version()
    rows = iris_rows(7)
    frame = pd.DataFrame(rows)
    keys = [f"row {i},\n(quoted)" for i in range(7)]
    if shape == "blank lines":
        text, id_column = frame.to_csv(index=False).replace("\n", "\n\n", 3), ""
    else:
        text, id_column = frame.assign(key=keys).to_csv(index=False), "key"

    job = submit_csv(text, id_column=id_column)
    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.rows_total, job.rows_done, job.rows_failed) == (
        Status.SUCCEEDED,
        7,
        7,
        0,
    )
    result = pd.read_csv(job.result_file.path)
    assert result["prediction"].tolist() == in_process_predictions(version, rows).tolist()
    if id_column:
        assert result["key"].tolist() == keys


def test_a_csv_with_only_blank_lines_fails_as_a_bad_file() -> None:
    make_version()
    job = submit_csv(",".join(IRIS_FEATURES) + "\n\n\n\n")
    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.error_code, job.result_file.name) == (Status.FAILED, "bad_file", "")


@override_settings(BATCH_CHUNK_ROWS=4)
def test_rows_the_model_cannot_answer_go_to_the_error_file() -> None:
    make_version()
    rows = iris_rows(6)
    rows[3] = dict.fromkeys(IRIS_FEATURES, 1.7e308)  # finite; the model's answer is NaN
    job = submit_csv(pd.DataFrame(rows).to_csv(index=False))
    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.rows_done, job.rows_failed) == (Status.SUCCEEDED, 6, 1)
    result = pd.read_csv(job.result_file.path)
    assert len(result) == 5
    assert result.notna().all().all()
    errors = pd.read_csv(job.error_file.path, dtype=str)
    assert errors["row"].tolist() == ["4"]
    assert "not a finite number" in errors["error"].iloc[0]


@override_settings(BATCH_CHUNK_ROWS=2)
def test_a_batch_none_of_whose_rows_can_be_scored_fails_and_keeps_its_error_file() -> None:
    # It succeeded, with no predictions: nothing told its owner every row was wrong.
    make_version()
    header = "key," + ",".join(IRIS_FEATURES)
    job = submit_csv(f"{header}\na,x,2,3,4\nb,1,2\nc,1,inf,3,4\n", id_column="key")
    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "no_rows_scored")
    assert (
        job.error_message == "none of the 3 rows could be scored; the error file says why for each"
    )
    assert (job.rows_total, job.rows_failed, job.result_file.name) == (3, 3, "")
    errors = pd.read_csv(job.error_file.path, dtype=str, keep_default_na=False)
    assert errors["key"].tolist() == ["a", "b", "c"]
    assert not default_storage.exists(f"results/{job.pk}.csv")  # its header alone, gone
    answer = APIClient()
    answer.force_authenticate(job.owner)
    listed = answer.get(f"/api/v1/jobs/{job.pk}/errors/?format=json")
    assert (listed.status_code, [row["key"] for row in listed.json()]) == (200, ["a", "b", "c"])
    assert answer.get(f"/api/v1/jobs/{job.pk}/result/").status_code == 409
    detail = answer.get(f"/api/v1/jobs/{job.pk}/").json()
    assert detail["error_file_url"].endswith(f"/api/v1/jobs/{job.pk}/errors/")
    assert detail["result_url"] is None


@override_settings(BATCH_CHUNK_ROWS=4)
def test_a_classifier_without_probabilities_gives_a_prediction_column_only() -> None:
    iris = load_iris()
    svc = LinearSVC(random_state=0).fit(iris.data, iris.target)
    version = make_version(estimator=svc)
    rows = iris_rows(6)
    job = submit_csv(pd.DataFrame(rows).to_csv(index=False))
    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.rows_done, job.rows_failed) == (Status.SUCCEEDED, 6, 0)
    result = pd.read_csv(job.result_file.path)
    assert list(result.columns) == ["row", "prediction"]
    assert result["prediction"].tolist() == in_process_predictions(version, rows).tolist()


@pytest.mark.django_db(transaction=True)  # the heartbeat writes from a thread of its own
@override_settings(BATCH_CHUNK_ROWS=10, CHUNK_LEASE_SECONDS=0.6)
def test_a_chunks_lease_is_renewed_only_while_it_scores(unsent_with_quick_retries) -> None:
    _, first, _ = planned_in_two_chunks()
    assert batching.claim_chunk(first, "t1")

    def lease() -> object:
        return BatchChunk.objects.get(pk=first).lease_expires_at

    claimed_lease = lease()
    beats = Heartbeat("CHUNK_LEASE_SECONDS", heartbeat.renew_chunks)  # beats every 0.2 s
    with beats.holding([first]):
        time.sleep(1.0)  # a chunk outliving its first lease
        renewed = lease()
    assert renewed > claimed_lease + timedelta(seconds=0.3)
    time.sleep(0.3)  # a beat begun as the chunk ended may still land
    settled = lease()
    time.sleep(0.5)  # two more beats: once it ended, nothing renews it
    assert lease() == settled


def test_parquet_integers_beyond_a_doubles_precision_are_scored_as_a_csvs_would_be(
    unsent_with_quick_retries,
) -> None:
    # A CSV's 2**53 + 1 is read as the nearest double; a Parquet int64 or uint64 cell was cast
    # "safely", and one such value failed the whole file.
    make_version()
    columns = {name: pa.array([5.1, 6.3, 4.4]) for name in IRIS_FEATURES}
    columns["sepal_length"] = pa.array([2**53 + 1, 5, 6], pa.int64())
    columns["petal_width"] = pa.array([2**64 - 1, 1, 2], pa.uint64())
    upload = io.BytesIO()
    pq.write_table(pa.table(columns), upload)
    parquet = SimpleUploadedFile("rows.parquet", upload.getvalue())
    job, _ = submission.submit_file(make_user(), "iris", parquet, size=parquet.size)

    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.rows_done, job.rows_failed) == (Status.SUCCEEDED, 3, 0), (
        job.error_message
    )
    text = pd.DataFrame({name: column.to_pylist() for name, column in columns.items()}).to_csv(
        index=False
    )
    csv = SimpleUploadedFile("rows.csv", text.encode())
    as_csv, _ = submission.submit_file(job.owner, "iris", csv, size=csv.size)
    run_whole(as_csv)
    as_csv.refresh_from_db()
    assert pd.read_csv(job.result_file.path).equals(pd.read_csv(as_csv.result_file.path))


def test_a_null_parquet_id_is_an_empty_cell_not_the_text_none(unsent_with_quick_retries) -> None:
    # An id cell left empty in a CSV is an empty cell; in Parquet it is null, and Python's
    # str(None) wrote it as "None", an id that a row may really have.
    make_version()
    columns = {name: pa.array([5.1, 6.3, 4.4]) for name in IRIS_FEATURES}
    columns["petal_width"] = pa.array([0.2, 1.9, None])  # its row goes to the error file
    columns["row_id"] = pa.array([None, "None", None], pa.string())
    upload = io.BytesIO()
    pq.write_table(pa.table(columns), upload)
    parquet = SimpleUploadedFile("rows.parquet", upload.getvalue())
    job, _ = submission.submit_file(
        make_user(), "iris", parquet, size=parquet.size, id_column="row_id"
    )

    run_whole(job)

    job.refresh_from_db()
    assert (job.status, job.rows_done, job.rows_failed) == (Status.SUCCEEDED, 3, 1)
    result = pd.read_csv(job.result_file.path, dtype=str, keep_default_na=False)
    assert result["row_id"].tolist() == ["", "None"]
    errors = pd.read_csv(job.error_file.path, dtype=str, keep_default_na=False)
    assert errors[["row", "row_id"]].values.tolist() == [["3", ""]]
