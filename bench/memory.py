"""memory: a worker's peak RSS while jobs cycle through 20 versions of a model.

Each version is a separate upload through the registry, so each is loaded and cached on
its own; the worker keeps MODEL_CACHE_SIZE of them (LRU). After the first cycle the cache
is full and evictions balance loads: RSS should stay flat. Run: `python -m bench.memory`.
"""

import os
import subprocess
from pathlib import Path

from . import report, workload
from .stack import PYTHON, Stack

VERSIONS = int(os.environ.get("BENCH_MEMORY_VERSIONS", "20"))
CYCLES = int(os.environ.get("BENCH_MEMORY_CYCLES", "3"))
KIND = os.environ.get("BENCH_MEMORY_MODEL", "rf")
CACHE_SIZE = int(os.environ.get("MODEL_CACHE_SIZE", "8"))
MB = 1024 * 1024


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def model_size_mb(kind: str, directory: Path) -> float:
    """What one loaded copy of the model adds to a fresh process (RSS before and after)."""
    path = directory / f"{kind}.joblib"
    path.write_bytes(workload.artifact(kind))
    script = (
        "import sys, joblib\n"
        "def rss():\n"
        "    line = [l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]\n"
        "    return int(line.split()[1])\n"
        "import sklearn.ensemble, numpy\n"
        "before = rss(); model = joblib.load(sys.argv[1]); print((rss() - before) / 1024)\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip())


def worker_rss(stack: Stack) -> tuple[float, float]:
    """The largest current and peak (VmHWM) RSS over the worker's pool processes, MB."""
    children = stack.worker_children()
    current = max(_status_kb(pid, "VmRSS") for pid in children) / 1024
    peak = max(_status_kb(pid, "VmHWM") for pid in children) / 1024
    return current, peak


def main() -> None:
    with Stack("memory") as stack:
        per_model = model_size_mb(KIND, stack.dir)
        name = f"bench-mem-{KIND}"
        for _ in range(VERSIONS):
            workload.register(stack, name, KIND, promote=False)
        row = dict(zip(workload.FEATURES, map(float, workload.rows(1)[0]), strict=True))
        idle, _ = worker_rss(stack)
        report.figure("memory", "idle_rss", idle, "MB", model=KIND)
        report.figure("memory", "model_in_memory", per_model, "MB", model=KIND)
        peaks = []
        for cycle in range(1, CYCLES + 1):
            for number in range(1, VERSIONS + 1):
                job = workload.post_json(
                    stack, "/api/v1/jobs/?wait=30", {"model": f"{name}:{number}", "input": row}
                )
                if job["status"] != "succeeded":
                    raise RuntimeError(f"{name}:{number} {job['status']}: {job['error_message']}")
            current, peak = worker_rss(stack)
            peaks.append(peak)
            report.figure("memory", f"rss_after_cycle_{cycle}", current, "MB", model=KIND)
            report.figure("memory", f"peak_rss_cycle_{cycle}", peak, "MB", model=KIND)
    bound = idle + CACHE_SIZE * per_model
    growth = max(peaks[1:], default=peaks[0]) - peaks[0]
    report.figure("memory", "lru_bound", bound, "MB", model=KIND, cache_size=CACHE_SIZE)
    report.figure("memory", "growth_after_first_cycle", growth, "MB", model=KIND)
    report.verdict(
        "memory",
        "peak within LRU bound, growth after first cycle < half a model",
        max(peaks) <= bound * 1.1 and growth < per_model / 2,
        model=KIND,
    )
    report.table()


if __name__ == "__main__":
    main()
