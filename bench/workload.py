"""The benchmark workload: the data, the two models, and talking to the API as a user does."""

import http.client
import io
import json
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from .stack import Stack

FEATURES = [f"x{i}" for i in range(20)]
MODELS = {
    "rf": lambda: RandomForestClassifier(n_estimators=100, random_state=0),
    "hgb": lambda: HistGradientBoostingClassifier(random_state=0),
}


@cache
def training_data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)


@cache
def fitted(kind: str) -> Any:
    features, labels = training_data()
    return MODELS[kind]().fit(features, labels)


def rows(count: int, seed: int = 1) -> np.ndarray:
    """Rows to score: drawn like the training data, not the training rows themselves."""
    features, _ = make_classification(
        n_samples=count, n_features=20, n_informative=10, random_state=seed
    )
    return features


def artifact(kind: str) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(fitted(kind), buffer)
    return buffer.getvalue()


def multipart(
    fields: dict[str, str], name: str, filename: str, size: int
) -> tuple[bytes, bytes, str]:
    """The bytes before and after a file part, and the content type, for a streamed upload."""
    boundary = uuid.uuid4().hex
    head = io.BytesIO()
    for key, value in fields.items():
        head.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode())
        head.write(f"{value}\r\n".encode())
    head.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    return (
        head.getvalue(),
        f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def post_file(stack: Stack, path: str, fields: dict[str, str], source: Path | bytes) -> dict:
    """POST a multipart form with one file, streamed from disk in blocks."""
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    filename = "artifact.joblib" if isinstance(source, bytes) else source.name
    head, tail, content_type = multipart(fields, "file", filename, size)
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=600)
    conn.putrequest("POST", path)
    for key, value in stack.headers().items():
        conn.putheader(key, value)
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    conn.send(head)
    for block in _blocks(source):
        conn.send(block)
    conn.send(tail)
    return _json_answer(conn, "POST", path)


def _blocks(source: Path | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    with open(source, "rb") as stream:
        while block := stream.read(4 * 1024 * 1024):
            yield block


def post_json(stack: Stack, path: str, payload: Any) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=60)
    conn.request(
        "POST", path, json.dumps(payload), {**stack.headers(), "Content-Type": "application/json"}
    )
    return _json_answer(conn, "POST", path)


def _json_answer(conn: http.client.HTTPConnection, method: str, path: str) -> dict:
    """Read the response, close the connection, and fail loudly on anything but success."""
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    if answer.status >= 300:
        raise RuntimeError(f"{method} {path}: {answer.status} {body[:500]!r}")
    return json.loads(body)


def get_json(stack: Stack, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=120)
    conn.request("GET", path, headers=stack.headers())
    return _json_answer(conn, "GET", path)


def register(stack: Stack, name: str, kind: str, *, promote: bool = True) -> dict:
    """Upload the fitted model through the registry API as a staff user would; promote it."""
    version = post_file(stack, f"/api/v1/models/{name}/versions/", {}, artifact(kind))
    if promote:
        post_json(
            stack,
            f"/api/v1/models/{name}/versions/{version['version']}/promote/",
            {"stage": "production"},
        )
    return version


def download(stack: Stack, path: str, target: Path) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=600)
    conn.request("GET", path, headers=stack.headers())
    answer = conn.getresponse()
    if answer.status != 200:
        raise RuntimeError(f"GET {path}: {answer.status} {answer.read()[:500]!r}")
    size = 0
    with open(target, "wb") as out:
        while block := answer.read(4 * 1024 * 1024):
            out.write(block)
            size += len(block)
    conn.close()
    return size


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def now() -> float:
    return time.perf_counter()
