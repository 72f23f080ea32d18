"""Rendering a finished job's result as JSON rows, CSV or Parquet."""

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpResponse
from rest_framework.renderers import BaseRenderer

from mlsite.errors import Conflict, DomainError

from ..batchfiles import (
    ESCAPED_STARTS,
    ROW,
    empty_errors,
    error_header,
    escape_formula,
    is_straddling,
    unescape_formula,
)
from ..models import Kind, PredictionJob, Status

PARQUET_TYPE = "application/vnd.apache.parquet"
# Files are UTF-8; said so, clients that would guess Latin-1 (requests) read ids right.
CSV_TYPE = "text/csv; charset=utf-8"


class NotReady(Conflict):
    code = "result_not_ready"


class ResultTooLarge(Conflict):
    code = "result_too_large"
    http_status = 400


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"

    # The views return their own file responses; this only lets content negotiation accept
    # the format, and renders raw bytes if DRF ever hands it some.
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return data if isinstance(data, bytes) else b""


class ParquetRenderer(CSVRenderer):
    media_type = PARQUET_TYPE
    format = "parquet"


def result_table(job: PredictionJob) -> pa.Table:
    """The whole result, values as the model gave them: a small job's from its outputs, a
    batch job's read back from its result file, ids as text and spreadsheet escapes undone."""
    if job.kind == Kind.SINGLE:
        return pa.Table.from_pylist([_flat(row) for row in job.outputs or []])
    # An id, or a text label, is text as it was sent ("007" is not 7); no cell is empty. Other
    # labels are numbers or the booleans pyarrow wrote as true and false; row numbers, numbers.
    types = {escape_formula(job.id_column): pa.string()} if job.id_column else {ROW: pa.int64()}
    if job.text_predictions:
        types["prediction"] = pa.string()
    options = pa_csv.ConvertOptions(
        column_types=types,
        null_values=[],
        true_values=["true"],
        false_values=["false"],
        strings_can_be_null=False,
    )
    return _read_back(job.result_file, options)


def _read_back(stored: FieldFile, options: pa_csv.ConvertOptions) -> pa.Table:
    """One of our CSV files (a result or an error file) as a table, escapes undone."""
    # A handle of its own for each read: FieldFile.open() reopens the field's one file, which
    # a read-ahead thread of the failed first read could still be reading from (a lost header).
    name = str(stored.name)
    try:
        with stored.storage.open(name, "rb") as stream:
            table = pa_csv.read_csv(stream, convert_options=options)
    except pa.ArrowInvalid as exc:
        if not is_straddling(exc):
            raise
        # A line longer than pyarrow's block (a huge id): the file as one block.
        whole = pa_csv.ReadOptions(block_size=stored.size + 1)
        with stored.storage.open(name, "rb") as stream:
            table = pa_csv.read_csv(stream, read_options=whole, convert_options=options)
    columns = [_unescaped(column) for column in table.columns]
    return pa.Table.from_arrays(columns, names=[unescape_formula(n) for n in table.column_names])


def _unescaped(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if not pa.types.is_string(column.type):
        return column
    # unescape_formula, a column at a time: a quote, then a start that escape_formula escapes
    second = pc.utf8_slice_codeunits(column, 1, 2)
    escaped = pc.and_(pc.starts_with(column, "'"), pc.is_in(second, pa.array(ESCAPED_STARTS)))
    return pc.if_else(escaped, pc.utf8_slice_codeunits(column, 1), column)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    flat = {"prediction": row["prediction"]}
    for label, probability in (row.get("probabilities") or {}).items():
        flat[f"probability_{label}"] = probability
    return flat


class ResultPurged(DomainError):
    code = "result_purged"
    http_status = 410


def check_ready(job: PredictionJob) -> None:
    if job.status != Status.SUCCEEDED:
        raise NotReady(f"job {job.pk} is {job.status}; results exist once it succeeded")
    _check_kept(job)


def check_errors_ready(job: PredictionJob) -> None:
    """As check_ready, but a job that failed with an error file (none of its rows could be
    scored) has one to give too, or had one until retention deleted it."""
    had_one = job.error_file or (job.purged_at is not None and job.rows_failed)
    if job.status == Status.FAILED and had_one:
        _check_kept(job)
    else:
        check_ready(job)


def _check_kept(job: PredictionJob) -> None:
    if job.purged_at is not None:  # result retention (RESULT_RETENTION_DAYS) removed it
        raise ResultPurged(f"the result of job {job.pk} was deleted on {job.purged_at:%Y-%m-%d}")


@contextmanager
def purged_meanwhile(job: PredictionJob) -> Iterator[None]:
    """A file that retention deleted after the job was read and before the file was opened
    is the 410 that the next request gets, not a 500."""
    try:
        yield
    except FileNotFoundError:
        job.refresh_from_db(fields=["purged_at"])
        _check_kept(job)
        raise


def json_rows(job: PredictionJob) -> list[dict[str, Any]]:
    if job.kind == Kind.SINGLE:
        return job.outputs or []
    if job.rows_total > settings.MAX_JSON_RESULT_ROWS:
        raise ResultTooLarge(
            f"{job.rows_total} rows is too many for JSON; ask for format=csv or parquet"
        )
    frame = result_table(job).to_pandas()
    probability_columns = [name for name in frame.columns if name.startswith("probability_")]
    identity = job.id_column or ROW
    rows = []
    for record in frame.to_dict("records"):
        row = {"prediction": record["prediction"]}
        if identity in record:  # a result file from before row numbers has none
            row[identity] = record[identity]
        if probability_columns:
            row["probabilities"] = {
                name.removeprefix("probability_"): record[name] for name in probability_columns
            }
        rows.append(row)
    return rows


def csv_response(job: PredictionJob) -> HttpResponse | FileResponse:
    name = f"{job.pk}.csv"
    response: HttpResponse | FileResponse
    if job.kind == Kind.BATCH:
        response = FileResponse(job.result_file.open("rb"), content_type=CSV_TYPE)
    else:
        frame = pd.DataFrame(result_table(job).to_pylist())
        if not pd.api.types.is_numeric_dtype(frame["prediction"]):  # labels as text
            frame["prediction"] = frame["prediction"].map(lambda value: escape_formula(str(value)))
        frame.columns = [escape_formula(str(column)) for column in frame.columns]
        response = HttpResponse(frame.to_csv(index=False), content_type=CSV_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def parquet_response(job: PredictionJob) -> HttpResponse:
    buffer = io.BytesIO()
    pq.write_table(result_table(job), buffer)
    response = HttpResponse(buffer.getvalue(), content_type=PARQUET_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{job.pk}.parquet"'
    return response


def error_rows(job: PredictionJob) -> list[dict[str, Any]]:
    """The rows that failed as JSON: row number, id (under the id column's name, or "id") and
    error, as in the error file, spreadsheet escapes undone."""
    if job.rows_failed > settings.MAX_JSON_RESULT_ROWS:
        raise ResultTooLarge(
            f"{job.rows_failed} failed rows is too many for JSON; ask for format=csv"
        )
    if not job.error_file:
        return []
    row, *texts = error_header(job.id_column)
    options = pa_csv.ConvertOptions(
        column_types={row: pa.int64(), **{name: pa.string() for name in texts}},
        null_values=[],
        strings_can_be_null=False,
    )
    return _read_back(job.error_file, options).to_pylist()


def errors_response(job: PredictionJob) -> HttpResponse | FileResponse:
    """The error file; for a job with no failed rows, its header alone."""
    response: HttpResponse | FileResponse
    if job.error_file:
        response = FileResponse(job.error_file.open("rb"), content_type=CSV_TYPE)
    else:
        response = HttpResponse(empty_errors(job.id_column), content_type=CSV_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{job.pk}.errors.csv"'
    return response
