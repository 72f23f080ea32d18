"""A small typed client for the jobs API, on the standard library only.

    from predictions.client import Client
    client = Client("http://127.0.0.1:8000", token="…")
    job = client.predict_file("iris", "rows.csv", "result.csv")   # submit, wait, download

It is also a command line, with or without the project's settings:

    python -m predictions.client --model iris --file rows.csv --out result.csv
    python manage.py predict --model iris --file rows.csv --out result.csv

The token comes from --token or MLSITE_TOKEN, the server from --url or MLSITE_URL.
"""

import argparse
import http.client
import json
import mimetypes
import os
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import HTTPHandler, HTTPSHandler, Request, build_opener

FINISHED = ("succeeded", "failed", "cancelled")
CHUNK = 1024 * 1024
DEFAULT_URL = "http://127.0.0.1:8000"
MEDIA_TYPES = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "json": "application/json",
}


class ApiError(Exception):
    """The API refused: the HTTP status and the error's stable code, detail and field."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field


class JobFailed(Exception):
    """The job finished without succeeding (failed or cancelled)."""

    def __init__(self, job: "Job") -> None:
        reason = " ".join(filter(None, (job.error_code, job.error_message)))  # none if cancelled
        super().__init__(f"job {job.id} {job.status}" + (f": {reason}" if reason else ""))
        self.job = job


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    kind: str
    model: str
    version: str
    rows_total: int
    rows_done: int
    rows_failed: int
    error_code: str
    error_message: str
    result_url: str | None
    error_file_url: str | None
    outputs: list[dict[str, Any]] | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Job":
        return cls(
            id=data["id"],
            status=data["status"],
            kind=data["kind"],
            model=data["model"],
            version=data["version"],
            rows_total=data["rows_total"],
            rows_done=data["rows_done"],
            rows_failed=data.get("rows_failed", 0),
            error_code=data.get("error_code", ""),
            error_message=data.get("error_message", ""),
            result_url=data.get("result_url"),
            error_file_url=data.get("error_file_url"),
            outputs=data.get("outputs"),
        )

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def progress(self) -> float:
        """0 to 1; a finished job is at 1 whatever its rows say."""
        if self.status == "succeeded":
            return 1.0
        return self.rows_done / self.rows_total if self.rows_total else 0.0


class Client:
    """One server and one user's token. Every method raises ApiError for an error answer."""

    def __init__(self, base_url: str, token: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def submit_rows(
        self, model: str, rows: list[dict[str, Any]], *, priority: int = 5, key: str = ""
    ) -> Job:
        body: dict[str, Any] = {"model": model, "inputs": rows, "priority": priority}
        if key:
            body["idempotency_key"] = key
        return Job.from_json(self._json("POST", "/api/v1/jobs/", body))

    def submit_file(
        self,
        model: str,
        path: str | Path,
        *,
        id_column: str = "",
        priority: int = 5,
        key: str = "",
    ) -> Job:
        """Uploads a CSV or Parquet file as a batch job; the file is streamed, not read whole."""
        fields = {"model": model, "id_column": id_column, "priority": str(priority)}
        if key:
            fields["idempotency_key"] = key
        # Opened before sending: a file that cannot be read is an error naming it, not a
        # failure to send (which urllib reports as the server's).
        with Path(path).open("rb") as file:
            body, length, content_type = _multipart(fields, file)
            headers = {"Content-Type": content_type, "Content-Length": str(length)}
            with self._open("POST", "/api/v1/jobs/", body, headers) as response:
                return Job.from_json(json.load(response))

    def get(self, job_id: str, wait: float = 0) -> Job:
        """The job now, or once finished if that comes within `wait` seconds (server-capped)."""
        query = f"?{urlencode({'wait': wait})}" if wait else ""
        return Job.from_json(self._json("GET", f"/api/v1/jobs/{job_id}/{query}"))

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._json("POST", f"/api/v1/jobs/{job_id}/cancel/", {}))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Polls until the job finishes; calls on_progress with each state it sees.

        A server that stops answering (restarting, or its database) is asked again until it
        has been away longer than this client's timeout: the job goes on there meanwhile.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        away_since: float | None = None
        while True:
            try:
                job = self.get(job_id, wait=poll)  # the server holds the call up to `poll` s
            except (ApiError, OSError) as error:
                now = time.monotonic()
                away_since = away_since or now
                gone = now - away_since > self.timeout or (deadline is not None and now > deadline)
                if gone or not _is_away(error):
                    raise
                time.sleep(poll)
                continue
            away_since = None
            if on_progress:
                on_progress(job)
            if job.is_finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")

    def download_result(self, job_id: str, out: str | Path, file_format: str = "csv") -> Path:
        """Streams a succeeded job's result (csv, parquet or json) to a file."""
        path = f"/api/v1/jobs/{job_id}/result/?{urlencode({'format': file_format})}"
        return self._save(path, MEDIA_TYPES.get(file_format, "*/*"), Path(out))

    def download_errors(self, job_id: str, out: str | Path) -> Path:
        """Streams a finished batch job's error file (row, id, reason per row not scored)."""
        return self._save(f"/api/v1/jobs/{job_id}/errors/", "text/csv", Path(out))

    def _save(self, path: str, media_type: str, out: Path) -> Path:
        # Opened after the answer: a refused download leaves no empty file behind.
        with (
            self._open("GET", path, None, {"Accept": media_type}) as response,
            out.open("wb") as stream,
        ):
            try:
                shutil.copyfileobj(response, stream, CHUNK)
                missing = getattr(response, "length", None)  # of the Content-Length, not received
                if missing:  # a dropped connection ends the copy as the end of the file would
                    raise ConnectionError(
                        f"the server stopped sending {out.name}, {missing} bytes short"
                    )
            except BaseException:  # a reset, a stall past the timeout, Ctrl-C: the same part
                # Kept, a file would read as a whole result; /dev/stdout or a pipe is not ours.
                if stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                    out.unlink(missing_ok=True)
                raise
        return out

    def predict_file(
        self,
        model: str,
        path: str | Path,
        out: str | Path,
        *,
        id_column: str = "",
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Submit a file, wait for it, save its result; raises JobFailed if it did not succeed."""
        job = self.submit_file(model, path, id_column=id_column)
        return self.collect(job.id, out, timeout=timeout, on_progress=on_progress)

    def collect(
        self,
        job_id: str,
        out: str | Path,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Wait for a submitted job, save its result; raises JobFailed if it did not succeed."""
        job = self.wait(job_id, timeout=timeout, on_progress=on_progress)
        if job.status != "succeeded":
            raise JobFailed(job)
        self.download_result(job.id, out, _format_of(Path(out)))
        return job

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self._open(method, path, data, headers) as response:
            return json.load(response)

    def _open(
        self,
        method: str,
        path: str,
        data: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> IO[bytes]:
        request = Request(self.base_url + path, data=data, method=method)  # noqa: S310 - the user's server URL, http(s) checked in main()
        request.add_header("Authorization", f"Token {self.token}")
        for name, value in {"Accept": "application/json", **(headers or {})}.items():
            request.add_header(name, value)
        try:
            return OPENER.open(request, timeout=self.timeout)
        except HTTPError as error:
            raise _api_error(error) from None


class _ReadsTheAnswerToABodyCutShort(http.client.HTTPConnection):
    """A server refuses a body too large from its Content-Length (413) and closes before
    reading the rest: sending then fails (broken pipe, reset), but its answer is there."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().request(*args, **kwargs)
        except (BrokenPipeError, ConnectionResetError):
            if self.sock is None:  # never connected: no answer to read
                raise
            # getresponse() reads the answer, or raises if the server left without one


class _ReadsTheAnswerToABodyCutShortTLS(
    _ReadsTheAnswerToABodyCutShort, http.client.HTTPSConnection
):
    pass


class _Handler(HTTPHandler):
    def http_open(self, req: Request) -> http.client.HTTPResponse:
        return self.do_open(_ReadsTheAnswerToABodyCutShort, req)


class _TLSHandler(HTTPSHandler):
    def https_open(self, req: Request) -> http.client.HTTPResponse:
        # No context of ours: the connection makes the default one, as urlopen's does.
        return self.do_open(_ReadsTheAnswerToABodyCutShortTLS, req)


OPENER = build_opener(_Handler, _TLSHandler)


def _is_away(error: Exception) -> bool:
    """Whether the server did not answer, or answered that it cannot for now."""
    if isinstance(error, ApiError):
        return error.status in (502, 503, 504)  # a proxy before a restarting web, an outage
    return isinstance(error, OSError)  # refused, reset, timed out (HTTPError is an ApiError)


def _api_error(error: HTTPError) -> ApiError:
    try:
        body = json.load(error)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or "; ".join(
        f"{name}: {' '.join(map(str, messages))}"
        for name, messages in body.items()
        if isinstance(messages, list)
    )
    return ApiError(
        error.code, body.get("code", "error"), detail or error.reason, body.get("field")
    )


def _multipart(fields: dict[str, str], file: IO[bytes]) -> tuple[Iterator[bytes], int, str]:
    """A multipart/form-data body as chunks, its exact length, and its content type."""
    boundary = uuid.uuid4().hex
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    name = Path(file.name).name
    file_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}"\r\nContent-Type: {file_type}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        while block := file.read(CHUNK):
            yield block
        yield tail

    length = len(head) + os.fstat(file.fileno()).st_size + len(tail)
    return chunks(), length, f"multipart/form-data; boundary={boundary}"


def _format_of(out: Path) -> str:
    suffix = out.suffix.lower().lstrip(".")
    return suffix if suffix in ("csv", "parquet", "json") else "csv"


class ProgressBar:
    """A text progress bar; on a terminal it redraws one line, elsewhere it prints each step."""

    def __init__(self, stream: IO[str], width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.is_tty = stream.isatty()
        self.last = ""
        self.line_open = False  # a terminal line redrawn, not yet ended

    def __call__(self, job: Job) -> None:
        filled = int(job.progress * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        rows = f"{job.rows_done}/{job.rows_total} rows" if job.rows_total else ""
        if job.rows_failed:
            rows += f", {job.rows_failed} not scored"
        line = f"[{bar}] {job.progress:4.0%} {rows} {job.status}".rstrip()
        if line == self.last:
            return
        self.last = line
        self.stream.write(f"\r{line}" if self.is_tty else f"{line}\n")
        self.line_open = self.is_tty
        if job.is_finished:
            self.end_line()
        self.stream.flush()

    def end_line(self) -> None:
        """Ends the line the bar redraws, so what is written next starts a line of its own."""
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="iris, iris@staging or iris:3")
    parser.add_argument("--file", required=True, help="CSV (with a header) or Parquet rows")
    parser.add_argument("--out", required=True, help="where to save the result (.csv/.parquet)")
    parser.add_argument("--id-column", default="", help="a column carried to the output")
    parser.add_argument(
        "--errors",
        default="",
        help="where to save the rows that could not be scored, with the reasons, when there "
        "are any (default: next to --out, as <name>.errors.csv)",
    )
    parser.add_argument("--url", default=os.environ.get("MLSITE_URL", DEFAULT_URL))
    parser.add_argument("--token", default=None, help="API token (default: $MLSITE_TOKEN)")
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=None, help="give up after seconds"
    )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return seconds


def run(options: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Runs the command line; returns the exit status.

    0 success, 1 the job failed, 2 refused or not reached, 130 interrupted (Ctrl-C).
    """
    token = options.token or os.environ.get("MLSITE_TOKEN")
    if not token:
        err.write("predict: no token: pass --token or set MLSITE_TOKEN\n")
        return 2
    if not options.url.startswith(("http://", "https://")):
        err.write(f"predict: --url must be http(s), got {options.url!r}\n")
        return 2
    errors = Path(options.errors or _errors_beside(Path(options.out)))
    # Checked before submitting: found only at the download, the job's work was wasted.
    for option, path in (("--out", Path(options.out)), ("--errors", errors)):
        if not path.parent.is_dir():
            err.write(f"predict: {option}: no directory {path.parent} to save {path.name} in\n")
            return 2
    client = Client(options.url, token)
    submitted: Job | None = None  # once set, a failure leaves this job on the server
    progress = ProgressBar(err)
    try:
        submitted = client.submit_file(options.model, options.file, id_column=options.id_column)
        try:
            job = client.collect(
                submitted.id, options.out, timeout=options.timeout, on_progress=progress
            )
        finally:
            progress.end_line()
        if job.rows_failed:
            client.download_errors(job.id, errors)
    except KeyboardInterrupt:
        err.write(f"predict: interrupted\n{_left_on_server(submitted, options.url)}")
        return 130
    # Before OSError, which some are: their text names no server. An HTTPException is an
    # answer that is not HTTP (another service on that port) or none at all.
    except (URLError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or f"{type(error).__name__}: {str(error).strip()}"
        err.write(
            f"predict: cannot reach {options.url} ({reason}); is the server running "
            "there? Name it with --url or MLSITE_URL\n"
            f"{_left_on_server(submitted, options.url)}"
        )
        return 2
    except (ApiError, OSError, TimeoutError) as error:
        err.write(f"predict: {error}\n{_left_on_server(submitted, options.url)}")
        return 2
    except JobFailed as failure:
        err.write(f"predict: {failure}\n")
        if failure.job.error_file_url:  # none of its rows could be scored: say why for each
            try:
                client.download_errors(failure.job.id, errors)
                err.write(f"predict: the reason for each row saved in {errors}\n")
            except (ApiError, OSError) as error:
                err.write(f"predict: the reasons could not be saved: {error}\n")
        return 1
    scored = job.rows_done - job.rows_failed
    of_all = f" of {job.rows_done}" if job.rows_failed else ""
    out.write(f"job {job.id}: {scored}{of_all} rows scored by {job.version}, saved {options.out}")
    if job.rows_failed:
        out.write(f"; {job.rows_failed} not scored, their reasons saved in {errors}")
    out.write("\n")
    return 0


def _left_on_server(job: Job | None, url: str) -> str:
    """A line naming the job a failure leaves behind, where to find and stop it; "" if none."""
    if job is None:
        return ""
    address = f"{url.rstrip('/')}/api/v1/jobs/{job.id}/"
    return (
        f"predict: job {job.id} is on the server: {address} (if it runs, POST {address}cancel/)\n"
    )


def _errors_beside(out: Path) -> Path:
    return out.with_name(f"{out.stem}.errors.csv")


def main(argv: list[str] | None = None) -> int:
    # argparse would name the file (client.py), which cannot be run on its own.
    command = argparse.ArgumentParser(
        prog="python -m predictions.client", description="Score a file with a model."
    )
    parser = build_parser(command)
    return run(parser.parse_args(argv), sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
