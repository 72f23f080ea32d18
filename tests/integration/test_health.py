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
        web = processes.start_web(port, private_redis.url)
        stack.callback(processes.stop, web)
        worker = processes.start_worker(private_redis.url)
        stack.callback(processes.stop, worker)
        beat = processes.start_beat(private_redis.url)
        stack.callback(processes.stop, beat)
        processes.wait_for(lambda: get_health(port)[0] == 200, 40, "a green /healthz")
        status, body = get_health(port)
        assert body["status"] == "ok" and body["checks"]["workers"]["workers"]

        private_redis.stop()
        status, body = get_health(port)
        assert status == 503
        assert "broker" in body["failing"]

        private_redis.start()
        last: dict = {}

        def green() -> bool:
            status, body = get_health(port)
            last.update(body)
            return status == 200

        try:
            processes.wait_for(green, 60, "/healthz green again")
        except TimeoutError:
            stacks = processes.dump_stacks(web, worker, beat)
            pytest.fail(f"/healthz still failing 60 s after Redis came back: {last}\n{stacks}")


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
