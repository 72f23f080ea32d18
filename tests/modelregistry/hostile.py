"""Hostile artifacts: pickles whose loading would create a marker file if their code ran."""

import builtins
import io
import os
import pickle
import subprocess
from pathlib import Path

import joblib
import numpy as np


class _CallsOsSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _CallsSubprocess:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (subprocess.call, (["touch", str(self.marker)],))


def _joblib(payload: object, **options: object) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(payload, buffer, **options)
    return buffer.getvalue()


def _raw_global_call(module: str, name: str, argument: str) -> bytes:
    """A protocol 4 pickle: push module.name, call it with one string (no Python class)."""

    def text(value: str) -> bytes:
        data = value.encode()
        return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data

    return (
        pickle.PROTO
        + bytes([4])
        + text(module)
        + text(name)
        + pickle.STACK_GLOBAL
        + text(argument)
        + pickle.TUPLE1
        + pickle.REDUCE
        + pickle.STOP
    )


def hostile_artifacts(marker: Path) -> dict[str, bytes]:
    """Every way we know to smuggle a call into a joblib artifact, by name."""
    command = f"touch {marker}"
    return {
        "os.system": _joblib(_CallsOsSystem(marker)),
        "builtins.eval": _joblib(_CallsEval(marker)),
        "subprocess.call": _joblib(_CallsSubprocess(marker)),
        "inside an object array": _joblib(np.array([_CallsOsSystem(marker), 1], dtype=object)),
        "zlib-compressed": _joblib(_CallsOsSystem(marker), compress=3),
        "dotted name through sklearn": _raw_global_call("sklearn.base", "os.system", command),
        "numpy function": _raw_global_call("numpy", "save", str(marker)),
        "sklearn test helper": _raw_global_call(
            "sklearn.utils._testing", "assert_run_python_script_without_output", command
        ),
    }
