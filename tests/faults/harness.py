"""A whole stack of real processes to break, a client that counts 5xx, and the figures.

Every fault test runs web (gunicorn), worker and beat processes on a Redis of its own, so it
can stop that Redis or kill those processes without touching the rest of the suite. Beat
runs the real reconciler every second with short timeouts.
"""

import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from predictions.models import FINISHED, Kind, PredictionJob, Status
from tests import processes
from tests.base import make_user
from tests.builders import IRIS_FEATURES, in_process_predictions, iris_rows, make_version

# The reconciler's clock, short enough for a test: a queued job is re-sent after 3 s, a
# running job whose worker died is re-run 6 s after its last sign of life.
FAULT_ENV = {
    "RECONCILE_INTERVAL": "1",
    "RECONCILE_QUEUED_AFTER": "3",
    "JOB_LEASE_SECONDS": "6",
    "SINGLE_JOB_LEASE_SECONDS": "6",
    "CHUNK_LEASE_SECONDS": "6",
    "MAX_ATTEMPTS": "5",
    "BATCH_CHUNK_ROWS": "500",
    "CELERY_WORKER_PREFETCH_MULTIPLIER": "32",
    "BROKER_RETRY_AFTER": "1",
}


@dataclass
class Figures:
    """What a fault cost: each must be zero."""

    lost: int = 0  # jobs that did not succeed with the model's own predictions
    duplicated: int = 0  # jobs whose outputs were written more than once
    stuck: int = 0  # jobs still running (or queued) at the end
    http_5xx: int = 0  # answers of 500 or more, and requests that got no answer
    notes: dict[str, object] = field(default_factory=dict)

    def report(self, name: str) -> None:
        extra = " ".join(f"{key}={value}" for key, value in self.notes.items())
        print(
            f"\nFAULT {name}: lost={self.lost} duplicated={self.duplicated} "
            f"stuck={self.stuck} http_5xx={self.http_5xx} {extra}"
        )

    def count_lost(self, missing: int, wrong: list[dict[str, object]]) -> None:
        """Jobs gone, and jobs that ended wrong (each told as how it ended): both are lost, and
        the report says which, for a rare loss is otherwise a riddle."""
        self.lost = missing + len(wrong)
        if self.lost:
            self.notes.update(missing=missing, wrong=wrong[:5])

    def assert_zero(self) -> None:
        assert (self.lost, self.duplicated, self.stuck, self.http_5xx) == (0, 0, 0, 0), self


class Api:
    """HTTP to the web process with a token; counts 5xx and requests that got no answer."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token
        self.server_errors = 0
        self.slowest = 0.0

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, dict]:
        url = self.base + path  # always http://127.0.0.1
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310
        request.add_header("Authorization", f"Token {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError:
            status, raw = 599, b"{}"  # no answer at all counts as a server error
        self.slowest = max(self.slowest, time.monotonic() - started)
        if status >= 500:
            self.server_errors += 1
        try:
            return status, json.loads(raw or b"{}")
        except ValueError:
            return status, {"raw": raw[:200].decode("utf-8", "replace")}

    def post_json(self, path: str, payload: object) -> tuple[int, dict]:
        return self.request("POST", path, json.dumps(payload).encode(), "application/json")

    def submit_rows(self, rows: Sequence[dict]) -> str:
        status, body = self.post_json("/api/v1/jobs/", {"model": "iris", "inputs": list(rows)})
        assert status == 201, (status, body)
        return body["id"]

    def submit_many(self, row_sets: Iterable[Sequence[dict]], threads: int = 8) -> list[str]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(self.submit_rows, row_sets))

    def submit_file(self, name: str, content: bytes, **fields: str) -> tuple[int, dict]:
        body, content_type = multipart({"model": "iris", **fields}, name, content)
        return self.request("POST", "/api/v1/jobs/", body, content_type)


def multipart(fields: dict[str, str], file_name: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for key, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode())
        out.write(f"{value}\r\n".encode())
    out.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
    )
    out.write(content + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def iris_csv(count: int) -> bytes:
    lines = ["row_id," + ",".join(IRIS_FEATURES)]
    lines += [
        f"r{i}," + ",".join(str(row[name]) for name in IRIS_FEATURES)
        for i, row in enumerate(iris_rows(count))
    ]
    return ("\n".join(lines) + "\n").encode()


class Stack:
    """Web, worker(s) and beat on one Redis; stopped in reverse order by close()."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.redis_url = redis_url
        self.env = {**FAULT_ENV, **env}
        self.port = processes.free_port()
        self.workers: list[subprocess.Popen] = []
        self.others: list[subprocess.Popen] = []
        user = make_user(f"fault-{uuid.uuid4().hex[:8]}")
        self.api = Api(self.port, Token.objects.create(user=user).key)

    def start(self, web: bool = True, worker: bool = True, beat: bool = True) -> "Stack":
        if web:
            self.others.append(processes.start_web(self.port, self.redis_url, **self.env))
        if beat:
            self.others.append(processes.start_beat(self.redis_url, **self.env))
        if worker:
            self.start_worker()
        return self

    def start_worker(self) -> subprocess.Popen:
        worker = processes.start_worker(self.redis_url, **self.env)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for process in [*self.workers, *self.others]:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a test may have paused it
            processes.stop(process, timeout=10)


def slow_forest_in_production(trees: int) -> None:
    """An iris forest of this many trees as iris's production version: scoring takes long
    enough for a test to act while it runs."""
    iris = load_iris()
    make_version(
        estimator=RandomForestClassifier(trees, random_state=0).fit(iris.data, iris.target)
    )


def pool_processes(worker: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def count_done(job_ids: Sequence[str]) -> int:
    return PredictionJob.objects.filter(pk__in=job_ids, status__in=FINISHED).count()


def wait_until_finished(job_ids: Sequence[str], timeout: float) -> float:
    """Seconds it took for every job to finish; returns at the timeout regardless."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline and count_done(job_ids) < len(job_ids):
        time.sleep(0.25)
    return time.monotonic() - started


def figures_for(
    job_ids: Sequence[str], rows_of: dict[str, list[dict]], api: Api | None = None
) -> Figures:
    """Count lost, duplicated and stuck jobs among these (single jobs: outputs checked)."""
    figures = Figures(http_5xx=api.server_errors if api else 0)
    jobs = PredictionJob.objects.select_related("version").filter(pk__in=job_ids)
    found = {str(job.pk): job for job in jobs}
    missing = len(set(job_ids) - set(found))
    successes = successful_writes(job_ids)
    wrong: list[dict[str, object]] = []
    for job_id, job in found.items():
        if job.status in (Status.RUNNING, Status.QUEUED):
            figures.stuck += 1
        elif not is_right(job, rows_of.get(job_id)):
            wrong.append(how_it_ended(job))
        if successes.get(job_id, 0) > 1:
            figures.duplicated += 1
    figures.count_lost(missing, wrong)
    return figures


def how_it_ended(job: PredictionJob) -> dict[str, object]:
    told = ("kind", "status", "error_code", "error_message", "attempts", "task_id")
    ended = {name: getattr(job, name) for name in told}
    ended.update(rows=f"{job.rows_done}/{job.rows_total} ({job.rows_failed} failed)")
    ended.update(outputs=(job.outputs or [])[:2])
    return ended


def successful_writes(job_ids: Sequence[str]) -> dict[str, int]:
    """Per job, how many task results record a successful scoring of it.

    Each scoring attempt has its own task id, and a summary is written for an attempt only
    when its outputs were written to the job.
    """
    counts: dict[str, int] = {}
    wanted = set(job_ids)
    for raw in TaskResult.objects.filter(status="SUCCESS").values_list("result", flat=True):
        summary = json.loads(raw or "null")
        if isinstance(summary, dict) and summary.get("status") == Status.SUCCEEDED:
            job_id = summary.get("job")
            if job_id in wanted:
                counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def is_right(job: PredictionJob, rows: list[dict] | None) -> bool:
    if job.status != Status.SUCCEEDED:
        return False
    if job.kind == Kind.BATCH:
        return job.rows_done == job.rows_total and job.rows_failed == 0
    expected = in_process_predictions(job.version, rows or job.inputs).tolist()
    return [row["prediction"] for row in job.outputs] == expected


def result_lines(job_id: str) -> list[str]:
    job = PredictionJob.objects.get(pk=job_id)
    with job.result_file.open("rb") as stream:
        return stream.read().decode().splitlines()
