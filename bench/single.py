"""single: 2,000 single-row jobs from 16 concurrent clients through the REST API, per model.

Each client does what the README tells users: POST /api/v1/jobs/?wait=30 with one row, and
reads the answer, which holds the prediction once the job finished. Every prediction is
checked against the same model scored in this process. The floor is measured in the same
run, before the first model's jobs and after each model's (main()); each model runs
BENCH_ROUNDS times (3).
Run: `python -m bench.single` (BENCH_MODELS=rf,hgb by default).
"""

import http.client
import itertools
import json
import os
import resource
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np

from . import clients, floor, report, workload
from .stack import Stack

JOBS = int(os.environ.get("BENCH_JOBS", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
KINDS = os.environ.get("BENCH_MODELS", "rf,hgb").split(",")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
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


@dataclass
class Workload:
    """One model's jobs, and its own predictions for them scored in this process."""

    kind: str
    name: str
    inputs: list[dict[str, float]]
    expected: np.ndarray
    in_process_ms: float


def prepare(stack: Stack, kind: str) -> Workload:
    """Register the model, score the rows in process, and warm the stack up on it."""
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
    return Workload(kind, name, inputs, expected, in_process_ms)


def measure(stack: Stack, work: Workload, round_: int) -> dict[str, float]:
    """Run the jobs once and report this round's figures; what the verdict needs."""
    cpu_before = stack.cpu_seconds()
    cpu_before["clients"] = _reaped_cpu()
    with stack.profiled(f"single-{work.kind}-{round_}"):
        records = clients.run(_client_setup(stack, work.name, work.inputs), JOBS, CLIENTS)
    for part, seconds in {**stack.cpu_seconds(), "clients": _reaped_cpu()}.items():
        used = (seconds - cpu_before[part]) / len(records) * 1000
        report.figure("single", f"cpu_per_job_{part}", used, "ms", model=work.kind, round=round_)
    return _report(work, records, round_)


def _report(work: Workload, records: list[dict[str, Any]], round_: int) -> dict[str, float]:
    kind, expected = work.kind, work.expected
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
    fig = partial(report.figure, "single", model=kind, round=round_)
    fig("jobs_per_s", rate, "jobs/s", jobs=len(records), clients=CLIENTS)
    fig("end_to_end_p50", p50, "ms")
    fig("end_to_end_p99", p99, "ms")
    fig("submit_p50", workload.percentile(submit, 50), "ms")
    fig("submit_p99", workload.percentile(submit, 99), "ms")
    fig("queued_p50", workload.percentile(queued, 50), "ms")
    fig("scoring_batch_p50", workload.percentile(scored, 50), "ms")
    fig("not_succeeded", unfinished, "jobs")
    fig("mismatches", mismatches, "jobs")
    fig("in_process_predict_all", work.in_process_ms, "ms", rows=len(expected))
    return {"rate": rate, "p50": p50, "p99": p99, "mismatches": mismatches}


def _verdict(kind: str, rounds: list[dict[str, float]]) -> None:
    """The targets, held to each figure's median over the rounds (mismatches: all of them)."""
    ratio, p50, p99 = (
        statistics.median(got[key] for got in rounds) for key in ("ratio", "p50", "p99")
    )
    mismatches = sum(got["mismatches"] for got in rounds)
    fig = partial(report.figure, "single", model=kind, rounds=len(rounds))
    fig("ratio_to_floor_median", ratio, "x")
    fig("end_to_end_p50_median", p50, "ms")
    fig("end_to_end_p99_median", p99, "ms")
    report.verdict(
        "single",
        ">=0.7x floor, p50<=50ms, p99<=150ms, 0 mismatches (medians of the rounds)",
        ratio >= 0.7 and p50 <= 50 and p99 <= 150 and mismatches == 0,
        model=kind,
    )


def main() -> None:
    """Each model runs ROUNDS times, the models taking turns, with a floor before the first run
    and after every run; a run's ratio is to the mean of the two floors around it, and the
    verdict takes the median over the rounds. This machine's speed moves by a tenth within a
    minute (the same code in one stack gave 384 to 475 jobs/s, alternating runs) and by a
    third within an hour, so one run against one floor made each ratio a lottery.
    BENCH_FLOOR_RATE gives a fixed floor instead (quicker while tuning)."""
    fixed = os.environ.get("BENCH_FLOOR_RATE")
    with Stack("single") as stack:
        numbers = itertools.count(1)

        floors: list[floor.Floor] = []

        def next_floor() -> float:
            if fixed:
                return float(fixed)
            floors.append(floor.measure(stack, at=next(numbers)))
            return floors[-1].jobs_per_s

        works = [prepare(stack, kind) for kind in KINDS]
        rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        before = next_floor()
        for round_ in range(1, ROUNDS + 1):
            for work in works:
                got = measure(stack, work, round_)
                after = next_floor()
                around = (before + after) / 2
                got["ratio"] = got["rate"] / around
                report.figure(
                    "single",
                    "ratio_to_floor",
                    got["ratio"],
                    "x",
                    model=work.kind,
                    round=round_,
                    floor_jobs_per_s=round(around, 1),
                )
                rounds[work.kind].append(got)
                before = after
        if floors:
            # With CLIENTS clients that each wait for their answer, p50 is about CLIENTS /
            # throughput: on a machine where the bare round trip's own p50 is near or above
            # 50 ms, no stack slower than it meets the p50 target.
            p50 = statistics.median(run.latency_p50_ms for run in floors)
            report.figure("floor", "latency_p50_median", p50, "ms", floors=len(floors))
        for kind, results in rounds.items():
            _verdict(kind, results)
    report.table()


if __name__ == "__main__":
    main()
