"""Run the benchmarks: `python -m bench [floor|single|batch|memory ...]` (default: all).

Each part starts a stack of its own under var/bench/<part>/; figures print as JSON lines,
then one table. BENCH_RUNS=3 repeats the whole set (figures are noisy on a shared machine).
"""

import os
import sys

from . import batch, floor, memory, report, single

PARTS = {"floor": floor.main, "single": single.main, "batch": batch.main, "memory": memory.main}


def main(names: list[str]) -> None:
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        sys.exit(f"unknown bench {unknown}; choose from {', '.join(PARTS)}")
    for run in range(1, int(os.environ.get("BENCH_RUNS", "1")) + 1):
        report.set_run(run)
        for name in names or ["single", "batch", "memory"]:  # single measures the floor too
            PARTS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
