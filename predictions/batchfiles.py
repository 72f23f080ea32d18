"""The files of a batch job: the input cut into chunks, CSV parts, the merge.

A plain CSV (no quote character after the header, so every newline ends a row) is cut into
byte ranges by one pass that only counts newlines; each chunk task parses its own range, so
parsing runs in parallel. Any other upload (Parquet, or a CSV with quoted cells) is rewritten
once as Parquet with one row group per chunk.
"""

import csv
import io
import os
from collections import deque
from collections.abc import Iterator, MutableSequence, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .inputs import BadFile, TooManyRows, csv_header_names, is_number_type
from .models import FileFormat

# What a spreadsheet may run as a formula, and the quote that escape_formula puts before it.
ESCAPED_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
READ_BLOCK_BYTES = 8 * 1024 * 1024
RANGE_BLOCK_BYTES = 1024 * 1024
SCAN_BLOCK_BYTES = 1024 * 1024
NEWLINE = ord("\n")
CARRIAGE_RETURN = ord("\r")
# A column put beside the features: why a line could not be read (null for a row that could).
UNREADABLE = "__unreadable_line__"


@dataclass(frozen=True)
class ByteRange:
    """Rows start_row..stop_row of a plain CSV, found at bytes start_byte..stop_byte."""

    start_byte: int
    stop_byte: int
    start_row: int
    stop_row: int


@dataclass
class CsvRanges:
    """A plain CSV's header (column names, stripped) and its chunks of whole lines."""

    columns: list[str]
    ranges: list[ByteRange]

    @property
    def rows(self) -> int:
        return self.ranges[-1].stop_row if self.ranges else 0


def plan_csv_ranges(source: Path, rows_per_chunk: int, max_rows: int) -> CsvRanges | None:
    """Chunks of `rows_per_chunk` lines each; None when a quote makes lines and rows differ.

    Rows are counted as lines, blank ones included; score_chunk corrects the count with the
    rows it parses. Raises TooManyRows (an upload is at most MAX_UPLOAD_BYTES, so the whole
    file is counted first).
    """
    # One block and one mask, filled again for each block: a fresh pair every 8 MiB cost
    # half of the scan in page faults, more on this VM, whose host takes back freed memory.
    block = bytearray(SCAN_BLOCK_BYTES)
    raw = np.frombuffer(block, np.uint8)
    mask = np.empty(SCAN_BLOCK_BYTES, dtype=bool)
    with open(source, "rb") as stream:
        columns = csv_header_names(stream.readline())
        chunk_start = position = stream.tell()
        ranges: list[ByteRange] = []
        rows = chunk_first_row = 0
        last_byte = NEWLINE
        while size := stream.readinto(block):
            if block.find(b'"', 0, size) != -1:
                return None
            # Twice as fast as bytes.count.
            newlines = np.equal(raw[:size], NEWLINE, out=mask[:size])
            count = int(np.count_nonzero(newlines))
            if rows + count - chunk_first_row >= rows_per_chunk:
                ends = np.flatnonzero(newlines) + position + 1
                first_cut = chunk_first_row + rows_per_chunk - rows  # 1-based line in block
                for line in range(first_cut, count + 1, rows_per_chunk):
                    stop = int(ends[line - 1])
                    ranges.append(ByteRange(chunk_start, stop, chunk_first_row, rows + line))
                    chunk_start, chunk_first_row = stop, rows + line
            rows += count
            position += size
            last_byte = block[size - 1]
    if position > chunk_start:  # the lines after the last cut
        rows += last_byte != NEWLINE  # a last line without a newline
        ranges.append(ByteRange(chunk_start, position, chunk_first_row, rows))
    if rows > max_rows:
        raise TooManyRows(f"file has more than {max_rows} rows", field="file")
    return CsvRanges(columns, ranges)


def csv_header(source: Path) -> tuple[list[str], int]:
    """The column names of a CSV's header line, stripped, and the line's length in bytes."""
    with open(source, "rb") as stream:
        line = stream.readline()
    return csv_header_names(line), len(line)


class Unreadable(NamedTuple):
    """A line pyarrow could not read: where it is, why, and its id cell when it has one."""

    line: int
    reason: str
    id: str = ""


@dataclass
class Conversion:
    """What converting an upload found: its row count and row groups.

    A line that cannot be read is a row of the converted file, which its chunk reports with
    its row number.
    """

    rows: int = 0
    row_groups: list[tuple[int, int]] = field(default_factory=list)


def escape_formula(text: str) -> str:
    """Text a spreadsheet will not run: a leading = + - @ tab or CR gets a quote before it.

    A leading quote gets one more, so that unescape_formula gives back exactly the text.
    """
    return "'" + text if text.startswith(ESCAPED_STARTS) else text


def unescape_formula(text: str) -> str:
    """The text escape_formula was given."""
    return text[1:] if text.startswith("'") and text[1:].startswith(ESCAPED_STARTS) else text


def convert_to_parquet(
    source: Path,
    file_format: str,
    target: Path,
    features: Sequence[str],
    id_column: str,
    *,
    rows_per_group: int,
    max_rows: int,
) -> Conversion:
    """Rewrite the upload as Parquet with one row group per chunk: chunk reads become cheap.

    Features are read as float64 when every value parses, else as text (scored row by row
    later, so one bad cell fails one row, not the file). Raises BadFile or TooManyRows.
    """
    try:
        return _convert(source, file_format, target, features, id_column, rows_per_group, max_rows)
    except pa.ArrowInvalid as exc:
        if file_format != FileFormat.CSV:  # feature types were checked: an id not UTF-8, say
            raise BadFile(f"the Parquet file cannot be read: {exc}") from None
        return _convert(
            source, file_format, target, features, id_column, rows_per_group, max_rows, text=True
        )


def _convert(
    source: Path,
    file_format: str,
    target: Path,
    features: Sequence[str],
    id_column: str,
    rows_per_group: int,
    max_rows: int,
    text: bool = False,
) -> Conversion:
    conversion = Conversion()
    batches = (
        _csv_batches(source, features, id_column, text)
        if file_format == FileFormat.CSV
        else _parquet_batches(source, features, id_column)
    )
    writer: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            conversion.rows += batch.num_rows
            if conversion.rows > max_rows:
                raise TooManyRows(f"file has more than {max_rows} rows", field="file")
            while pending_rows >= rows_per_group:
                table = pa.Table.from_batches(pending)
                writer = writer or _writer(target, table.schema)
                writer.write_table(table.slice(0, rows_per_group), row_group_size=rows_per_group)
                pending = table.slice(rows_per_group).to_batches()
                pending_rows -= rows_per_group
        if pending_rows or writer is None:
            table = pa.Table.from_batches(pending) if pending else _empty(features, id_column, text)
            writer = writer or _writer(target, table.schema)
            writer.write_table(table, row_group_size=max(rows_per_group, 1))
    except pa.ArrowInvalid:
        if writer is not None:
            writer.close()
        target.unlink(missing_ok=True)
        raise
    writer.close()
    conversion.row_groups = _row_groups(target)
    return conversion


def _writer(target: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # A working file, read once per chunk and deleted with the job: random floats barely
    # compress, and trying dictionaries and snappy on them took 3/4 of the write (bench/).
    return pq.ParquetWriter(target, schema, compression="none", use_dictionary=False)


def _empty(features: Sequence[str], id_column: str, text: bool) -> pa.Table:
    types = _column_types(features, id_column, text)
    return pa.table({name: pa.array([], kind) for name, kind in types.items()})


def _row_groups(path: Path) -> list[tuple[int, int]]:
    metadata = pq.ParquetFile(path).metadata
    groups, start = [], 0
    for index in range(metadata.num_row_groups):
        stop = start + metadata.row_group(index).num_rows
        groups.append((start, stop))
        start = stop
    return groups


def _csv_batches(
    source: Path, features: Sequence[str], id_column: str, text: bool
) -> Iterator[pa.RecordBatch]:
    """The rows of a CSV, with a row for each line that cannot be read in its place."""
    unreadable: deque[Unreadable] = deque()  # lines counted among the non-blank ones, 1 the header
    columns, _ = csv_header(source)
    parse_options, types = _csv_reading(features, id_column, columns, text, unreadable)
    try:
        reader = pa_csv.open_csv(
            source,
            # One thread: pyarrow numbers the lines it skips only when it reads in order.
            read_options=pa_csv.ReadOptions(block_size=READ_BLOCK_BYTES, use_threads=False),
            parse_options=parse_options,
            convert_options=_converting(types),
        )
    except pa.ArrowInvalid as exc:
        _cannot_read(exc, text)
    lines = 0  # data lines given out so far, rows and unreadable ones
    try:
        for batch in reader:
            # A block's lines are all numbered before its batch comes out.
            placed, lines = _unreadable_in(unreadable, lines, lines + batch.num_rows)
            table = pa.Table.from_batches([batch])
            yield from _with_unreadable(table, placed, id_column).to_batches()
    except pa.ArrowInvalid as exc:
        if not text:
            raise  # the caller reads the file again in text mode
        raise BadFile(f"the CSV file cannot be read: {exc}") from None
    rest = [line._replace(line=at) for at, line in enumerate(unreadable)]
    if rest:  # the lines after the last row
        empty = _empty(features, id_column, text)
        yield from _with_unreadable(empty, rest, id_column).to_batches()


def _unreadable_in(
    unreadable: deque[Unreadable], first: int, stop: int
) -> tuple[list[Unreadable], int]:
    """Takes from `unreadable` the lines that fall among a batch's rows, the batch starting
    at data line `first`: them, positioned in the batch, and the data line after it."""
    placed = []
    while unreadable and unreadable[0].line - 2 < stop:  # line 2 is data line 0
        taken = unreadable.popleft()
        placed.append(taken._replace(line=taken.line - 2 - first))
        stop += 1
    return placed, stop


def _csv_reading(
    features: Sequence[str],
    id_column: str,
    columns: Sequence[str],
    text: bool,
    unreadable: MutableSequence[Unreadable],
) -> tuple[pa_csv.ParseOptions, dict[str, pa.DataType]]:
    """Parse options that skip ragged lines, noting each in `unreadable` (numbers count
    non-blank lines from 1, and are known only to a reader on one thread) with its id cell
    when the line reaches the id column, and the column types.

    Text mode reads cells as bytes: a feature or id cell that is not UTF-8 then fails its
    own row instead of the whole file.
    """

    def skip_ragged(row: Any) -> str:
        reason = (
            f"unreadable line: expected {row.expected_columns} columns, got {row.actual_columns}"
        )
        unreadable.append(Unreadable(row.number, reason, _cell(row.text, id_at)))
        return "skip"

    id_at = list(columns).index(id_column) if id_column in columns else None

    types = _column_types(features, id_column, text)
    return pa_csv.ParseOptions(invalid_row_handler=skip_ragged), types


def _cell(line: str, at: int | None) -> str:
    """Cell `at` of a CSV line, or "" (no such cell, or none asked for)."""
    if at is None:
        return ""
    cells = next(csv.reader([line]), [])
    return cells[at] if at < len(cells) else ""


def _column_types(features: Sequence[str], id_column: str, text: bool) -> dict[str, pa.DataType]:
    kind = pa.binary() if text else pa.float64()
    types = {name: kind for name in features}
    if id_column:
        types[id_column] = pa.binary() if text else pa.string()
    return types


def _converting(types: dict[str, pa.DataType]) -> pa_csv.ConvertOptions:
    # Only an empty cell is missing: pyarrow's default also takes "nan", "NA", "null"... for
    # one, and the row's error would then say the cell is empty.
    return pa_csv.ConvertOptions(
        column_types=types,
        include_columns=list(types),
        null_values=[""],
        strings_can_be_null=False,
    )


def _with_unreadable(table: pa.Table, lines: list[Unreadable], id_column: str) -> pa.Table:
    """The table with an UNREADABLE column, and a row put in for each of `lines` (positioned
    among all the rows): its reason there, its id cell, other text cells empty, numbers null."""
    if not lines:
        return table.append_column(UNREADABLE, pa.nulls(table.num_rows, pa.string()))
    count = len(lines)
    filler = [
        pa.array([line.id.encode() for line in lines], kind)
        if name == id_column
        else pa.array([b""] * count, kind)
        if pa.types.is_string(kind) or pa.types.is_binary(kind)
        else pa.nulls(count, kind)
        for name, kind in zip(table.column_names, table.schema.types, strict=True)
    ]
    merged = pa.concat_tables([table, pa.Table.from_arrays(filler, schema=table.schema)])
    reasons = pa.array([None] * table.num_rows + [line.reason for line in lines], pa.string())
    order = np.empty(table.num_rows + count, dtype=np.int64)
    at = np.array([line.line for line in lines], dtype=np.int64)
    is_row = np.ones(len(order), dtype=bool)
    is_row[at] = False
    order[is_row] = np.arange(table.num_rows)
    order[at] = table.num_rows + np.arange(count)
    return merged.append_column(UNREADABLE, reasons).take(order)


def _cannot_read(exc: pa.ArrowInvalid, text: bool) -> NoReturn:
    """A cell that is not a number is raised as is (the caller reads again as text); any
    other error, or one in text mode, is a file we cannot read."""
    if "CSV conversion error" in str(exc) and not text:
        raise exc
    raise BadFile(f"the CSV file cannot be read: {exc}") from None


def _parquet_batches(
    source: Path, features: Sequence[str], id_column: str
) -> Iterator[pa.RecordBatch]:
    parquet = pq.ParquetFile(source)
    for batch in parquet.iter_batches(batch_size=64 * 1024):
        columns = []
        for name in features:
            column = batch.column(name)
            if not is_number_type(column.type):
                raise BadFile(f"column {name} is {column.type}, not a number", field="file")
            # Unsafe: an integer past a double's 2**53 becomes the nearest double, as it
            # does read from a CSV, instead of failing the whole file.
            columns.append(column.cast(pa.float64(), safe=False))
        if id_column:
            columns.append(batch.column(id_column).cast(pa.string()))
        names = [*features, *([id_column] if id_column else [])]
        yield pa.RecordBatch.from_arrays(columns, names=names)


@dataclass
class ChunkRows:
    """One chunk's rows: the feature matrix of the good rows and the reasons for the bad ones."""

    matrix: np.ndarray
    good: np.ndarray  # row positions within the chunk that can be scored
    ids: np.ndarray | None
    errors: list[tuple[int, str]]  # (position within the chunk, reason)


def read_chunk(path: Path, index: int, features: Sequence[str], id_column: str) -> ChunkRows:
    """Row group `index` of the converted input."""
    return _chunk_rows(pq.ParquetFile(path).read_row_group(index), features, id_column)


def read_range(source: Path, span: ByteRange, features: Sequence[str], id_column: str) -> ChunkRows:
    """One byte range of a plain CSV: its rows, positioned by line within the range.

    A line that cannot be read is one of the rows, with its reason.
    """
    columns, header_bytes = csv_header(source)
    # pyarrow parses 1 MiB blocks 40 % faster than 8 MiB ones (CPU caches; bench/); a block
    # must hold a whole line, and a line is about as long as the header, a few times over.
    block_bytes = max(RANGE_BLOCK_BYTES, 16 * header_bytes)
    unreadable: list[Unreadable] = []
    # Parsed where the page cache holds it: reading the range into a buffer first cost a
    # sixth of the parse (bench/). Nothing made from it outlives the mapping.
    with pa.memory_map(str(source)) as mapped:
        mapped.seek(span.start_byte)
        data = mapped.read_buffer(span.stop_byte - span.start_byte)
        parse = partial(_parse_range, data, columns, block_bytes, features, id_column)
        try:
            table = parse(False, unreadable)
        except pa.ArrowInvalid:  # a cell that is not a number: read as text, fail only its row
            unreadable.clear()
            table = parse(True, unreadable)
        if unreadable:  # numbered from 1 among the range's non-blank lines
            placed = [line._replace(line=line.line - 1) for line in unreadable]
            table = _with_unreadable(table, placed, id_column)
        rows = _chunk_rows(table, features, id_column)
        lines = span.stop_row - span.start_row
        if table.num_rows < lines:  # blank lines, which pyarrow skips, keep their numbers
            rows = _at_lines(rows, np.delete(np.arange(lines), _blank_lines(data)))
        return rows


def _parse_range(
    data: pa.Buffer,
    columns: Sequence[str],
    block_bytes: int,
    features: Sequence[str],
    id_column: str,
    text: bool,
    unreadable: list[Unreadable],
) -> pa.Table:
    parse_options, types = _csv_reading(features, id_column, columns, text, unreadable)
    try:
        return pa_csv.read_csv(
            data,
            # One thread: the worker's processes already parse chunks side by side (and
            # pyarrow numbers the lines it skips only on one).
            read_options=pa_csv.ReadOptions(
                column_names=list(columns), block_size=block_bytes, use_threads=False
            ),
            parse_options=parse_options,
            convert_options=_converting(types),
        )
    except pa.ArrowInvalid as exc:
        if is_straddling(exc) and block_bytes <= data.size:
            # A line longer than a block (a huge id cell): the range as one block.
            del unreadable[:]  # numbered again by the second reading
            again = partial(_parse_range, data, columns, data.size + 1, features, id_column)
            return again(text, unreadable)
        _cannot_read(exc, text)


def is_straddling(exc: pa.ArrowInvalid) -> bool:
    """Whether pyarrow refused a line longer than its block ("straddling object")."""
    return "straddl" in str(exc)


def _blank_lines(data: pa.Buffer) -> np.ndarray:
    """The positions of the empty lines (LF or CRLF alone) among a range's lines."""
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw == NEWLINE)
    lengths = np.diff(ends, prepend=-1) - 1
    return np.flatnonzero((lengths == 0) | ((lengths == 1) & (raw[ends - 1] == CARRIAGE_RETURN)))


def _at_lines(rows: ChunkRows, lines: np.ndarray) -> ChunkRows:
    """The rows positioned by line: row i was found on line lines[i] of the range."""
    if len(lines) != len(rows.good) + len(rows.errors):
        return rows  # a bare CR parsed as a line end: lines unknown, keep rows in order
    ids = None
    if rows.ids is not None:
        ids = np.full(int(lines[-1]) + 1 if len(lines) else 0, "", dtype=object)
        ids[lines] = rows.ids
    errors = [(int(lines[at]), reason) for at, reason in rows.errors]
    return ChunkRows(rows.matrix, lines[rows.good], ids, errors)


def _chunk_rows(table: pa.Table, features: Sequence[str], id_column: str) -> ChunkRows:
    columns = []
    failed = np.zeros(table.num_rows, dtype=bool)
    for name in features:
        column = table.column(name)
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type):
            values = pd.to_numeric(pd.Series(column.to_numpy(zero_copy_only=False)), "coerce")
            failed |= values.isna().to_numpy()
            columns.append(values.to_numpy(dtype=np.float64))
        else:
            columns.append(pc.fill_null(column, np.nan).to_numpy())
    matrix = np.column_stack(columns) if columns else np.empty((table.num_rows, 0))
    ids, bad_ids = _ids(table.column(id_column)) if id_column else (None, np.zeros_like(failed))
    finite = np.isfinite(matrix).all(axis=1) & ~failed & ~bad_ids
    errors = []
    for row in np.flatnonzero(~finite).tolist():
        reason = _reason(table, features, row)
        if reason is None:
            reason = f"{id_column} is not UTF-8 text" if bad_ids[row] else "row cannot be scored"
        errors.append((row, reason))
    good = np.flatnonzero(finite)
    scorable = matrix[good] if errors else matrix  # every row good: no copy of the matrix
    return ChunkRows(scorable, good, ids, errors)


def _ids(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The ids as text, and which were not UTF-8 (text mode reads them as bytes)."""
    # A null id (Parquet's) is an empty cell, as a CSV's empty one is: str(None) is "None".
    values = column.fill_null("").to_numpy(zero_copy_only=False)
    bad = np.zeros(len(values), dtype=bool)
    if not pa.types.is_binary(column.type):
        return values, bad
    texts = np.empty(len(values), dtype=object)
    for at, value in enumerate(values):
        try:
            texts[at] = value.decode("utf-8")
        except UnicodeDecodeError:
            texts[at], bad[at] = value.decode("utf-8", "replace"), True
    return texts, bad


def _reason(table: pa.Table, features: Sequence[str], row: int) -> str | None:
    """Why the row's features cannot be scored; None if they can."""
    if UNREADABLE in table.column_names and (line := table.column(UNREADABLE)[row].as_py()):
        return str(line)
    for name in features:
        value = table.column(name)[row].as_py()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        # float() also takes other scripts' digits and 1_000, which the file's parser does not.
        if isinstance(value, str) and (not value.isascii() or "_" in value):
            return f"{name} is not a number: {value[:50]!r}"
        try:
            number = float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return f"{name} is not a number: {str(value)[:50]!r}"
        if number is None:
            return f"{name} is empty"
        if np.isnan(number):
            return f"{name} is not a number: {str(value)[:50]!r}"
        if not np.isfinite(number):
            return f"{name} must be a finite number"
    return None


ROW = "row"  # a result's first column without an id column: the row's number, as errors give it


def header(id_column: str, classes: Sequence[Any] | None) -> list[str]:
    names = [id_column or ROW]
    names.append("prediction")
    names += [f"probability_{label}" for label in classes or []]
    return [escape_formula(name) for name in names]


def error_header(id_column: str) -> list[str]:
    """The error file's columns: row number, the id column (or "id"), reason."""
    return [escape_formula(name) for name in ("row", id_column or "id", "error")]


def empty_errors(id_column: str) -> bytes:
    """The error file of a job none of whose rows failed: its header line alone."""
    return _csv_line(error_header(id_column)).encode("utf-8")


def write_part(
    path: Path,
    ids: np.ndarray | None,
    predictions: np.ndarray,
    probabilities: np.ndarray | None,
    names: Sequence[str],
) -> None:
    """The scored rows as header-less CSV, text cells escaped; written aside, then renamed."""
    columns: list[pa.Array] = []
    if ids is not None:
        columns.append(_cell_column(ids))  # text ids escaped; row numbers, numbers
    columns.append(_cell_column(predictions))
    if probabilities is not None:
        columns += [pa.array(probabilities[:, i]) for i in range(probabilities.shape[1])]
    table = pa.Table.from_arrays(columns, names=list(names))
    partial = _aside(path)
    pa_csv.write_csv(table, partial, pa_csv.WriteOptions(include_header=False))
    os.replace(partial, path)


def _cell_column(values: np.ndarray) -> pa.Array:
    if values.dtype.kind in "biuf":
        return pa.array(values)
    return pa.array([escape_formula(str(value)) for value in values], pa.string())


def write_errors(path: Path, rows: Sequence[tuple[str, str, str]]) -> None:
    """(row number, id, reason) rows as header-less CSV; every cell is text, so escaped.

    Lines end in LF, as the header line and the result file's do (csv's default is CRLF).
    """
    partial = _aside(path)
    with open(partial, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        for row in rows:
            writer.writerow([escape_formula(cell) for cell in row])
    os.replace(partial, path)


def _aside(path: Path) -> Path:
    """Where this process writes a part before renaming it into place: its own, since a chunk
    the reconciler took for lost may be written by two processes at once (the same bytes)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def concatenate(target: Path, names: Sequence[str], parts: Sequence[Path]) -> None:
    """One CSV: the header line, then each part's bytes in order (no parsing)."""
    partial = target.with_suffix(".tmp")
    with open(partial, "wb", buffering=0) as out:
        _write_all(out, _csv_line(names).encode("utf-8"))
        for part in parts:
            with open(part, "rb", buffering=0) as stream:
                _append(stream, out)
    os.replace(partial, target)


def _append(source: io.FileIO, target: io.FileIO) -> None:
    """The rest of `source` written on at `target`'s position, copied by the kernel
    (copy_file_range): half the time of a copy through Python's buffers (a 48 MB result,
    bench/). A plain copy where the system or the filesystem has no such call."""
    copy_file_range = getattr(os, "copy_file_range", None)  # Linux only
    if copy_file_range is not None:
        left = os.fstat(source.fileno()).st_size - source.tell()
        try:
            while left > 0 and (copied := copy_file_range(source.fileno(), target.fileno(), left)):
                left -= copied
        except OSError:  # EXDEV, ENOSYS, EINVAL: both positions are where the copy stopped
            pass
    while block := source.read(4 * 1024 * 1024):  # what is left, if anything
        _write_all(target, block)


def _write_all(target: io.FileIO, data: bytes) -> None:
    """An unbuffered write may write part (a disk that fills up): what it left is written
    again, which raises the error; ignored, the result was kept short without one."""
    view = memoryview(data)
    while view:
        view = view[target.write(view) :]


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()
