"""1,000 malformed requests of every kind: each a 4xx with a JSON error, none a job."""

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from mlsite import broker
from predictions.models import PredictionJob
from tests import processes
from tests.builders import IRIS_FEATURES, iris_rows
from tests.faults.harness import Api, Stack, multipart

GOOD_ROW = iris_rows(1)[0]
LIMITS = {"MAX_REQUEST_BYTES": "50000", "MAX_UPLOAD_BYTES": "200000"}
Request = tuple[str, str, bytes, str]  # method, path, body, content type


def raw_json(text: str, path: str = "/api/v1/jobs/") -> Request:
    return ("POST", path, text.encode(), "application/json")


def row_with(value: str) -> Request:
    """A one-row job whose first feature is this JSON text."""
    rest = ", ".join(f'"{name}": 1.0' for name in IRIS_FEATURES[1:])
    return raw_json(f'{{"model": "iris", "input": {{"sepal_length": {value}, {rest}}}}}')


def job(payload: object, path: str = "/api/v1/jobs/") -> Request:
    return ("POST", path, json.dumps(payload).encode(), "application/json")


def upload(name: str, content: bytes, **fields: str) -> Request:
    body, content_type = multipart({"model": "iris", **fields}, name, content)
    return ("POST", "/api/v1/jobs/", body, content_type)


def header(*names: str) -> bytes:
    return (",".join(names) + "\n1,2,3,4\n").encode()


KINDS: dict[str, Callable[[], Request]] = {
    "NaN": lambda: row_with("NaN"),
    "Infinity": lambda: row_with("Infinity"),
    "-Infinity": lambda: row_with("-Infinity"),
    "float overflowing to infinity": lambda: row_with("1e999"),
    "integer overflowing a float": lambda: row_with("1" + "0" * 400),
    "integer of 5000 digits": lambda: row_with("9" * 5000),
    "nested 100,000 deep": lambda: raw_json("[" * 100_000 + "]" * 100_000),
    "nested 100 deep in a row": lambda: row_with("[" * 100 + "]" * 100),
    "boolean feature": lambda: row_with("true"),
    "numeric string feature": lambda: row_with('"5.1"'),
    "null feature": lambda: row_with("null"),
    "object feature": lambda: row_with('{"a": 1}'),
    "missing feature": lambda: job({"model": "iris", "input": {"sepal_length": 1.0}}),
    "unknown feature": lambda: job({"model": "iris", "input": {**GOOD_ROW, "x": 1}}),
    "inputs a string": lambda: job({"model": "iris", "inputs": "rows"}),
    "inputs an object": lambda: job({"model": "iris", "inputs": GOOD_ROW}),
    "inputs empty": lambda: job({"model": "iris", "inputs": []}),
    "row a list": lambda: job({"model": "iris", "inputs": [[1, 2, 3, 4]]}),
    "too many rows": lambda: job({"model": "iris", "inputs": [{"a": 1}] * 1001}),
    "body too large": lambda: job({"model": "iris", "inputs": iris_rows(1000)}),
    "not UTF-8": lambda: ("POST", "/api/v1/jobs/", b'{"model": "\xff\xfe"}', "application/json"),
    "truncated JSON": lambda: raw_json('{"model": "iris", "inputs": [{'),
    "empty JSON body": lambda: raw_json(""),
    "JSON array body": lambda: raw_json("[1, 2]"),
    "JSON string body": lambda: raw_json('"iris"'),
    "text/plain body": lambda: ("POST", "/api/v1/jobs/", b"model=iris", "text/plain"),
    "unknown model": lambda: job({"model": "nope", "input": GOOD_ROW}),
    "unknown version": lambda: job({"model": "iris:99999999999999999999", "input": GOOD_ROW}),
    "bad stage": lambda: job({"model": "iris@nowhere", "input": GOOD_ROW}),
    "path-like model": lambda: job({"model": "../../etc/passwd", "input": GOOD_ROW}),
    "no model": lambda: job({"input": GOOD_ROW}),
    "input and inputs": lambda: job({"model": "iris", "input": GOOD_ROW, "inputs": [GOOD_ROW]}),
    "unknown field": lambda: job({"model": "iris", "input": GOOD_ROW, "owner": 1}),
    "priority too high": lambda: job({"model": "iris", "input": GOOD_ROW, "priority": 10}),
    "priority text": lambda: job({"model": "iris", "input": GOOD_ROW, "priority": "high"}),
    "priority overflow": lambda: raw_json(
        '{"model": "iris", "priority": 1e308, "input": ' + json.dumps(GOOD_ROW) + "}"
    ),
    "idempotency key too long": lambda: job(
        {"model": "iris", "input": GOOD_ROW, "idempotency_key": "k" * 500}
    ),
    "wait NaN": lambda: job({"model": "iris", "input": {}}, "/api/v1/jobs/?wait=nan"),
    "wait inf": lambda: (
        "GET",
        "/api/v1/jobs/00000000-0000-0000-0000-000000000000/?wait=inf",
        b"",
        "",
    ),
    "wait text": lambda: job({"model": "iris", "input": GOOD_ROW}, "/api/v1/jobs/?wait=soon"),
    "CSV header not UTF-8": lambda: upload("rows.csv", "sépal,b\n1,2\n".encode("latin-1")),
    "CSV empty": lambda: upload("rows.csv", b""),
    "CSV missing a column": lambda: upload("rows.csv", header(*IRIS_FEATURES[:3])),
    "CSV unknown column": lambda: upload("rows.csv", header(*IRIS_FEATURES, "extra")),
    "CSV duplicate column": lambda: upload("rows.csv", header(*IRIS_FEATURES, IRIS_FEATURES[0])),
    "CSV missing id column": lambda: upload("rows.csv", header(*IRIS_FEATURES), id_column="id"),
    "file not CSV or Parquet": lambda: upload("rows.exe", header(*IRIS_FEATURES)),
    "Parquet that is not": lambda: upload("rows.parquet", b"PAR1 not really"),
    "file too large": lambda: upload("rows.csv", header(*IRIS_FEATURES) + b"1,2,3,4\n" * 30_000),
    "multipart without file": lambda: ("POST", "/api/v1/jobs/", *_no_file()),
    "multipart with a broken boundary": lambda: (
        "POST",
        "/api/v1/jobs/",
        b"--nope\r\ngarbage",
        "multipart/form-data; boundary=other",
    ),
    "job id not a UUID": lambda: ("GET", "/api/v1/jobs/not-a-uuid/", b"", ""),
    "cancel a job that does not exist": lambda: (
        "POST",
        "/api/v1/jobs/00000000-0000-0000-0000-000000000000/cancel/",
        b"",
        "",
    ),
    "list filter with a bad status": lambda: ("GET", "/api/v1/jobs/?status=exploded", b"", ""),
    "list filter with a bad date": lambda: (
        "GET",
        "/api/v1/jobs/?created_after=yesterday",
        b"",
        "",
    ),
}


def _no_file() -> tuple[bytes, str]:
    body = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\niris\r\n--b--\r\n'
    return body, "multipart/form-data; boundary=b"


def requests(count: int) -> Iterator[tuple[str, Request]]:
    kinds = itertools.cycle(KINDS.items())
    for _ in range(count):
        name, build = next(kinds)
        yield name, build()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_thousand_malformed_requests_get_4xx_json_errors_and_enqueue_nothing(
    volatile_redis: processes.RedisServer, iris_version: object
) -> None:
    stack = Stack(volatile_redis.url, **LIMITS).start(worker=False, beat=False)
    try:
        answers, statuses = send_all(stack.api, 1000)
    finally:
        stack.close()
    client = broker.redis.Redis.from_url(volatile_redis.url)
    messages = sum(client.llen(key) for q in ("predict", "batch") for key in broker.queue_keys(q))

    print(f"\nFAULT 1000 malformed requests: http_5xx={stack.api.server_errors} jobs=", end="")
    print(f"{PredictionJob.objects.count()} messages={messages} statuses={dict(statuses)}")
    assert sum(statuses.values()) == 1000 and all(400 <= code < 500 for code in statuses)
    wrong = {name: answer for name, answer in answers.items() if not 400 <= answer[0] < 500}
    assert wrong == {}
    assert stack.api.server_errors == 0
    assert PredictionJob.objects.count() == 0 and messages == 0
    for name, (_, body) in answers.items():
        assert "code" in body, (name, body)  # our JSON error shape, not an HTML page


def send_all(api: Api, count: int) -> tuple[dict[str, tuple[int, dict]], Counter]:
    """Send `count` requests cycling through every kind: the last answer per kind, and how
    many answers had each status (a kind whose answer varies shows up in the statuses)."""
    answers: dict[str, tuple[int, dict]] = {}
    statuses: Counter = Counter()
    for name, (method, path, body, content_type) in requests(count):
        answers[name] = api.request(method, path, body or None, content_type)
        statuses[answers[name][0]] += 1
    return answers, statuses
