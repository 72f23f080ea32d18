"""single: 2,000 single-row jobs from 16 concurrent clients through the REST API, per model.

Each client does what the README tells users: POST /api/v1/jobs/?wait=30 with one row, and
reads the answer, which holds the prediction once the job finished. Every prediction is
checked against the same model scored in this process. The floor is measured in the same
run, before the first model and after each (main()).
Run: `python -m bench.single` (BENCH_MODELS=rf,hgb by default).
"""

import http.client
import json
import os
import resource
import time
from datetime import datetime
from typing import Any

import numpy as np

from . import clients, floor, report, workload
from .stack import Stack

JOBS = int(os.environ.get("BENCH_JOBS", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
KINDS = os.environ.get("BENCH_MODELS", "rf,hgb").split(",")
WAIT_SECONDS = 30


def _client_setup(stack: Stack, model: str, inputs: list[dict[str, float]]) -> clients.Setup:
    headers = {**stack.headers(), "Content-Type": "application/json"}

    def setup() -> clients.Work:
        conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=60)

        def work(index: int) -> dict[str, Any]:
            nonlocal conn
            body = json.dumps({"model": model, "input": inputs[index]})
            sent_at = time.time()
            try:
                conn.request("POST", f"/api/v1/jobs/?wait={WAIT_SECONDS}", body, headers)
                answer = conn.getresponse()
            except (http.client.HTTPException, OSError):  # the server closed a kept-alive
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=60)
                conn.request("POST", f"/api/v1/jobs/?wait={WAIT_SECONDS}", body, headers)
                answer = conn.getresponse()
            job = json.loads(answer.read())
            if answer.status != 201:
                raise RuntimeError(f"job {index}: HTTP {answer.status} {job}")
            return {"sent_at": sent_at, "job": _slim(job)}

        return work

    return setup


def _reaped_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _slim(job: dict[str, Any]) -> dict[str, Any]:
    outputs = job.get("outputs") or [{}]
    return {
        "status": job["status"],
        "prediction": outputs[0].get("prediction"),
        "probabilities": outputs[0].get("probabilities"),
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
    }


def _epoch(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else np.nan


def measure(stack: Stack, kind: str) -> dict[str, float]:
    """Run the jobs for one model and report its figures; what the verdict needs."""
    name = f"bench-{kind}"
    workload.register(stack, name, kind)
    matrix = workload.rows(JOBS, seed=7)
    inputs = [dict(zip(workload.FEATURES, map(float, row), strict=True)) for row in matrix]
    estimator = workload.fitted(kind)
    started = time.perf_counter()
    expected = estimator.predict(matrix)
    in_process_ms = (time.perf_counter() - started) * 1000
    warm_up = min(200, JOBS)  # enough for every worker process to load the model
    clients.run(_client_setup(stack, name, inputs), warm_up, CLIENTS)
    cpu_before = stack.cpu_seconds()
    cpu_before["clients"] = _reaped_cpu()
    with stack.profiled(f"single-{kind}"):
        records = clients.run(_client_setup(stack, name, inputs), JOBS, CLIENTS)
    for part, seconds in {**stack.cpu_seconds(), "clients": _reaped_cpu()}.items():
        used = (seconds - cpu_before[part]) / len(records) * 1000
        report.figure("single", f"cpu_per_job_{part}", used, "ms", model=kind)
    return _report(kind, records, expected, in_process_ms)


def _report(
    kind: str,
    records: list[dict[str, Any]],
    expected: np.ndarray,
    in_process_ms: float,
) -> dict[str, float]:
    jobs = [r["job"] for r in records]
    unfinished = sum(job["status"] != "succeeded" for job in jobs)
    mismatches = sum(
        int(job["prediction"] != expected[r["index"]]) for r, job in zip(records, jobs, strict=True)
    )
    rate = len(records) / (max(r["finished"] for r in records) - min(r["started"] for r in records))
    end_to_end = [(r["finished"] - r["started"]) * 1000 for r in records]
    submit = [
        (_epoch(job["created_at"]) - r["sent_at"]) * 1000
        for r, job in zip(records, jobs, strict=True)
    ]
    queued = [(_epoch(j["started_at"]) - _epoch(j["created_at"])) * 1000 for j in jobs]
    scored = [(_epoch(j["finished_at"]) - _epoch(j["started_at"])) * 1000 for j in jobs]
    p50, p99 = workload.percentile(end_to_end, 50), workload.percentile(end_to_end, 99)
    fig = report.figure
    fig("single", "jobs_per_s", rate, "jobs/s", model=kind, jobs=len(records), clients=CLIENTS)
    fig("single", "end_to_end_p50", p50, "ms", model=kind)
    fig("single", "end_to_end_p99", p99, "ms", model=kind)
    fig("single", "submit_p50", workload.percentile(submit, 50), "ms", model=kind)
    fig("single", "submit_p99", workload.percentile(submit, 99), "ms", model=kind)
    fig("single", "queued_p50", workload.percentile(queued, 50), "ms", model=kind)
    fig("single", "scoring_batch_p50", workload.percentile(scored, 50), "ms", model=kind)
    fig("single", "not_succeeded", unfinished, "jobs", model=kind)
    fig("single", "mismatches", mismatches, "jobs", model=kind)
    fig("single", "in_process_predict_all", in_process_ms, "ms", model=kind, rows=len(expected))
    return {"rate": rate, "p50": p50, "p99": p99, "mismatches": mismatches}


def _verdict(kind: str, got: dict[str, float], floor_rate: float) -> None:
    ratio = got["rate"] / floor_rate
    report.figure(
        "single", "ratio_to_floor", ratio, "x", model=kind, floor_jobs_per_s=round(floor_rate, 1)
    )
    report.verdict(
        "single",
        ">=0.7x floor, p50<=50ms, p99<=150ms, 0 mismatches",
        ratio >= 0.7 and got["p50"] <= 50 and got["p99"] <= 150 and got["mismatches"] == 0,
        model=kind,
    )


def main() -> None:
    """The floor before the first model and after each: a model's ratio is to the mean of the
    floors measured just before and just after it, so the machine's drift over the run (its
    speed moves by a third within an hour here) falls on both sides of the comparison alike.
    BENCH_FLOOR_RATE gives a fixed floor instead (quicker while tuning)."""
    fixed = os.environ.get("BENCH_FLOOR_RATE")
    with Stack("single") as stack:

        def floor_rate(number: int) -> float:
            return float(fixed) if fixed else floor.measure(stack, at=number)

        before = floor_rate(1)
        for number, kind in enumerate(KINDS, start=2):
            got = measure(stack, kind)
            after = floor_rate(number)
            _verdict(kind, got, (before + after) / 2)
            before = after
    report.table()


if __name__ == "__main__":
    main()
