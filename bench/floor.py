"""floor: a no-op Celery task sent and awaited 2,000 times by 16 concurrent clients.

No HTTP and no database: the bare Celery round trip on this machine, with a Redis result
backend, the yardstick the `single` bench is held to. Run: `python -m bench.floor`.
"""

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from . import clients, report
from .stack import PYTHON, ROOT, WORKER_CONCURRENCY, Stack, free_port, tree_cpu, wait_for
from .workload import percentile

JOBS = int(os.environ.get("BENCH_JOBS", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))


def _setup() -> clients.Work:
    from bench.floor_app import noop

    noop.delay(-1).get(timeout=30)  # connect before the clock starts

    def work(index: int) -> dict[str, Any]:
        if noop.delay(index).get(timeout=60) != index:
            raise RuntimeError(f"no-op {index} answered wrongly")
        return {}

    return work


def _cpu(worker_pid: int, stack: Stack) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "worker": tree_cpu(worker_pid),
        "redis": stack.cpu_seconds()["redis"],
        "clients": usage.ru_utime + usage.ru_stime,
    }


@dataclass(frozen=True)
class Floor:
    jobs_per_s: float
    latency_p50_ms: float


def measure(stack: Stack, **context: Any) -> Floor:
    """Start a bare worker on the stack's Redis (database 1), measure, stop it.

    `context` goes with every figure (at=N: which of the run's floors this is).
    """
    redis_url = stack.redis_url.rsplit("/", 1)[0] + "/1"
    env = stack.env(BENCH_FLOOR_REDIS_URL=redis_url)
    name = f"floor-{free_port()}@%h"
    args = [PYTHON, "-m", "celery", "-A", "bench.floor_app", "worker", "-n", name]
    args += ["--concurrency", str(WORKER_CONCURRENCY), "--loglevel", "WARNING"]
    args += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    with open(stack.dir / "floor-worker.log", "ab") as log:
        worker = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)
    os.environ["BENCH_FLOOR_REDIS_URL"] = redis_url  # read by bench.floor_app in the clients
    sys.modules.pop("bench.floor_app", None)
    try:
        from celery import Celery

        control = Celery(broker=redis_url, set_as_current=False)
        hostname = name.replace("%h", __import__("socket").gethostname())
        wait_for(lambda: control.control.ping([hostname], timeout=0.5), 60, "floor worker")
        clients.run(_setup, 100, CLIENTS)  # warm-up: pool processes, connections
        before = _cpu(worker.pid, stack)
        records = clients.run(_setup, JOBS, CLIENTS)
        used = {
            part: (after - before[part]) / JOBS * 1000
            for part, after in _cpu(worker.pid, stack).items()
        }
    finally:
        worker.terminate()
        worker.wait(30)
    first = min(r["started"] for r in records)
    last = max(r["finished"] for r in records)
    rate = len(records) / (last - first)
    latencies = [(r["finished"] - r["started"]) * 1000 for r in records]
    p50 = percentile(latencies, 50)
    fig = report.figure
    fig("floor", "jobs_per_s", rate, "jobs/s", jobs=len(records), clients=CLIENTS, **context)
    fig("floor", "latency_p50", p50, "ms", **context)
    fig("floor", "latency_p99", percentile(latencies, 99), "ms", **context)
    for part, ms in used.items():
        fig("floor", f"cpu_per_job_{part}", ms, "ms", **context)
    return Floor(rate, p50)


def main() -> None:
    with Stack("floor") as stack:
        measure(stack)
    report.table()


if __name__ == "__main__":
    main()
