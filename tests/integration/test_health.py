"""/healthz over a real stack: web, worker and beat processes on a Redis the test controls."""

import json
import urllib.error
import urllib.request
from contextlib import ExitStack

import pytest

from tests import processes


def get_health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.django_db(transaction=True)
def test_health_turns_503_without_redis_and_200_when_it_is_back(private_redis) -> None:
    port = processes.free_port()
    with ExitStack() as stack:
        for start in (
            lambda: processes.start_web(port, private_redis.url),
            lambda: processes.start_worker(private_redis.url),
            lambda: processes.start_beat(private_redis.url),
        ):
            stack.callback(processes.stop, start())
        processes.wait_for(lambda: get_health(port)[0] == 200, 40, "a green /healthz")
        status, body = get_health(port)
        assert body["status"] == "ok" and body["checks"]["workers"]["workers"]

        private_redis.stop()
        status, body = get_health(port)
        assert status == 503
        assert "broker" in body["failing"]

        private_redis.start()
        processes.wait_for(lambda: get_health(port)[0] == 200, 60, "/healthz green again")


@pytest.mark.django_db(transaction=True)
def test_health_names_missing_workers_and_beat(private_redis) -> None:
    port = processes.free_port()
    web = processes.start_web(port, private_redis.url)
    try:
        status, body = get_health(port)
        assert status == 503
        assert body["failing"] == ["workers", "beat"]
        assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    finally:
        processes.stop(web)
