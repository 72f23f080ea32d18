"""Checking input rows and uploaded files against a model's schema before a job is accepted."""

import csv
import io
import math
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings

from mlsite.errors import BadInput, TooLarge
from modelregistry.models import RegisteredModel

from .models import FileFormat

MAX_HEADER_BYTES = 1024 * 1024


class TooManyRows(TooLarge):
    code = "too_many_rows"
    http_status = 400


class FileTooLarge(TooLarge):
    code = "file_too_large"


class BadFile(BadInput):
    code = "bad_file"


def check_rows(model: RegisteredModel, rows: Any, *, one: bool = False) -> list[dict[str, float]]:
    """The rows as floats in schema order; raises BadInput naming the first bad row and field
    (inputs[2].x, or input.x for `one`: a single row sent as `input`)."""
    if one:
        return [check_row(model.feature_names, rows[0], "input")]
    if not isinstance(rows, list) or not rows:
        raise BadInput("inputs must be a non-empty list of objects", field="inputs")
    if len(rows) > settings.MAX_INLINE_ROWS:
        raise TooManyRows(
            f"{len(rows)} rows is more than {settings.MAX_INLINE_ROWS}; upload a file instead",
            field="inputs",
        )
    features = model.feature_names
    return [check_row(features, row, f"inputs[{index}]") for index, row in enumerate(rows)]


def check_row(features: list[str], row: Any, where: str) -> dict[str, float]:
    if not isinstance(row, dict):
        raise BadInput(f"{where} must be an object of feature values", field=where)
    missing = [name for name in features if name not in row]
    if missing:
        raise BadInput(f"{where} is missing {', '.join(missing)}", field=f"{where}.{missing[0]}")
    extra = sorted(set(row) - set(features))
    if extra:
        raise BadInput(f"{where} has unknown {', '.join(extra)}", field=f"{where}.{extra[0]}")
    return {name: check_number(row[name], f"{where}.{name}") for name in features}


def check_number(value: Any, where: str) -> float:
    if value is None:
        raise BadInput(f"{where} is empty (null); it must be a number", field=where)
    # bool is an int in Python; a true/false feature value is almost always a client bug.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{where} must be a number, got {type(value).__name__}", field=where)
    try:
        number = float(value)
    except OverflowError:  # an int past float range (the JSON parsers refuse it first)
        raise BadInput(f"{where} is too large for a number", field=where) from None
    if not math.isfinite(number):
        raise BadInput(f"{where} must be a finite number", field=where)
    return number


def file_format_of(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return FileFormat.CSV
    if lowered.endswith((".parquet", ".pq")):
        return FileFormat.PARQUET
    raise BadFile("file must be a .csv or .parquet file", field="file")


def check_file(model: RegisteredModel, upload: IO[bytes], size: int, id_column: str) -> str:
    """The file's format once its size and columns fit the schema; raises BadInput/TooLarge."""
    if size > settings.MAX_UPLOAD_BYTES:
        raise FileTooLarge(
            f"file is {size} bytes, more than {settings.MAX_UPLOAD_BYTES}", field="file"
        )
    file_format = file_format_of(getattr(upload, "name", "") or "")
    features = model.feature_names
    if file_format == FileFormat.CSV:
        header = _csv_columns(upload)
        _check_delimiter(features, header)
        check_columns(features, header, id_column)
    else:
        schema = _parquet_schema(upload)
        index = pandas_index_columns(schema) - {*features, id_column}
        check_columns(features, [name for name in schema.names if name not in index], id_column)
        check_parquet_types(features, schema, id_column)
    return file_format


def pandas_index_columns(schema: pa.Schema) -> set[str]:
    """The columns pandas wrote for a DataFrame's index (a filtered frame's row labels, say):
    pandas reads them back as the index, not as data, so they are no unknown columns."""
    try:
        metadata = schema.pandas_metadata
    except ValueError:  # metadata that is not JSON: no index of pandas'
        return set()
    index = metadata.get("index_columns") if isinstance(metadata, dict) else None
    # A RangeIndex is stored as a dict, in no column.
    return {name for name in index if isinstance(name, str)} if isinstance(index, list) else set()


def check_columns(features: list[str], columns: list[str], id_column: str) -> None:
    # An error file lists row, id, error: an id column named row or error would share a name.
    if id_column in ("row", "error", "prediction") or id_column.startswith("probability_"):
        raise BadInput(
            f"id column {id_column!r} has the name of a result column (row, error, prediction, "
            "probability_<class>); rename it in the file",
            field="id_column",
        )
    missing = [name for name in features if name not in columns]
    if missing:
        raise BadFile(f"file is missing column(s) {', '.join(missing)}", field="file")
    if id_column and id_column not in columns:
        raise BadFile(f"file has no id column {id_column!r}", field="id_column")
    # A column with no name (a spreadsheet's trailing comma) holds no feature: it is ignored.
    columns = [name for name in columns if name]
    extra = [name for name in columns if name not in features and name != id_column]
    if extra:
        unknown = f"file has unknown column(s) {', '.join(extra)}"
        if not id_column:  # most often an id column, sent without its name
            unknown += (
                ": the model takes only its features; name a column to carry through to "
                "the result with id_column (--id-column in the client)"
            )
        raise BadFile(unknown, field="file")
    if len(set(columns)) != len(columns):
        raise BadFile("file has duplicate column names", field="file")


def check_parquet_types(features: list[str], schema: pa.Schema, id_column: str) -> None:
    """Features must be stored as numbers, the id as something pyarrow can write as text."""
    for name in features:
        kind = schema.field(name).type
        if not is_number_type(kind):
            raise BadFile(f"column {name} is {kind}, not a number", field="file")
    if id_column:
        kind = schema.field(id_column).type
        try:
            pa.nulls(0, kind).cast(pa.string())
        except pa.ArrowNotImplementedError:  # nested types: struct, list, map
            raise BadFile(
                f"id column {id_column} is {kind}, which cannot be written as text",
                field="id_column",
            ) from None


def is_number_type(kind: pa.DataType) -> bool:
    # Not bool, decimal or text: the worker reads features as float64 as they are stored.
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def csv_header_names(line: bytes) -> list[str]:
    """The column names of a CSV header line, stripped; raises BadFile."""
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadFile("CSV header is not UTF-8 text", field="file") from None
    if "\r" in text.rstrip("\r\n"):
        # The chunk plan counts rows by LF; a file of CR-only lines would be one long row.
        raise BadFile(
            "CSV lines end in CR alone; save the file with LF or CRLF line ends", field="file"
        )
    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as exc:  # e.g. a name longer than csv's field limit (128 KiB)
        raise BadFile(f"CSV header cannot be read: {exc}", field="file") from None
    return [name.strip() for name in header]


def _csv_columns(upload: IO[bytes]) -> list[str]:
    upload.seek(0)
    first_line = upload.readline(MAX_HEADER_BYTES)
    upload.seek(0)
    header = csv_header_names(first_line)
    if not header:
        raise BadFile("CSV file is empty or has no header row", field="file")
    return header


# What spreadsheets write between fields where a comma is the decimal mark, and tab-separated
# exports: such a header reads as one column named after all of them.
OTHER_DELIMITERS = {";": "semicolons", "\t": "tabs"}


def _check_delimiter(features: list[str], header: list[str]) -> None:
    """Refuse a CSV whose fields another character separates, saying so: it was refused as
    missing every column, which told its sender nothing about why."""
    if len(header) != 1 or header[0] in features:
        return
    for delimiter, name in OTHER_DELIMITERS.items():
        if delimiter in header[0]:
            shown = header[0] if len(header[0]) <= 80 else header[0][:77] + "..."
            raise BadFile(
                f"CSV fields must be separated by commas; this file's header is one column, "
                f"{shown!r}, its names separated by {name}",
                field="file",
            )


def _parquet_schema(upload: IO[bytes]) -> pa.Schema:
    upload.seek(0)
    try:
        return pq.read_schema(upload)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
        raise BadFile(f"not a readable Parquet file: {exc}", field="file") from None
    finally:
        upload.seek(0)
