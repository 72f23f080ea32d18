"""Printing figures: one JSON line each (for machines), then a short table (for people)."""

import json
import platform
import sys
from typing import Any

_figures: list[dict[str, Any]] = []
_run = {"run": 1}


def set_run(run: int) -> None:
    """Number the figures of a repeated run (BENCH_RUNS); the table shows this run's."""
    _run["run"] = run
    _figures.clear()


def figure(bench: str, name: str, value: float, unit: str, **context: Any) -> None:
    """Print one figure as a JSON line and keep it for the table."""
    row = {
        "bench": bench,
        "figure": name,
        "value": round(float(value), 4),
        "unit": unit,
        "run": _run["run"],
        **context,
    }
    _figures.append(row)
    print(json.dumps(row), flush=True)


def verdict(bench: str, target: str, met: bool, **context: Any) -> None:
    row = {"bench": bench, "target": target, "met": met, "run": _run["run"], **context}
    _figures.append(row)
    print(json.dumps(row), flush=True)


def table(file: Any = sys.stdout) -> None:
    print(f"\n# {platform.node()} python {platform.python_version()}", file=file)
    print(f"{'bench':<8} {'figure':<34} {'value':>12}  unit", file=file)
    for row in _figures:
        if "figure" in row:
            label = row["figure"] + _which(row)
            print(f"{row['bench']:<8} {label:<34} {row['value']:>12}  {row['unit']}", file=file)
    for row in _figures:
        if "target" in row:
            label = row["target"] + _which(row)
            mark = "met" if row["met"] else "NOT MET"
            print(f"{row['bench']:<8} target {label:<48} {mark}", file=file)
    file.flush()


def _which(row: dict[str, Any]) -> str:
    """Which model (and round) a figure is for, or which of a run's floors: " [rf]",
    " [hgb r2]", " [#2]"."""
    if "model" in row:
        return f" [{row['model']} r{row['round']}]" if "round" in row else f" [{row['model']}]"
    return f" [#{row['at']}]" if "at" in row else ""
