"""/healthz over a real stack: web, worker and beat processes on a Redis the test controls."""

import json
import urllib.error
import urllib.request
from contextlib import ExitStack
from functools import partial

import kombu.exceptions
import pytest
import redis
from celery import Celery

from mlsite.scheduler import HEARTBEAT_KEY
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
        processes.wait_for(lambda: get_health(port)[0] == 200, 90, "/healthz green again")

        # A restart no check saw: the web's pooled connections are closed by the server...
        private_redis.stop()
        private_redis.start()
        # ...and once the worker and beat are back (seen on the test's own new connections),
        # the web's first checks must say so too, not fail on a dropped connection.
        back = partial(stack_is_back, private_redis.url)
        processes.wait_for(back, 90, "worker and beat back", interval=1)
        for _ in range(4):  # both web processes, whichever takes each request
            status, body = get_health(port)
            assert status == 200, (body, processes.dump_stacks(web, worker, beat))


def stack_is_back(redis_url: str) -> bool:
    control = Celery(broker=redis_url, set_as_current=False)
    try:
        beat = redis.Redis.from_url(redis_url).get(HEARTBEAT_KEY)
        return bool(beat) and bool(control.control.ping(timeout=0.5))
    except (redis.exceptions.ConnectionError, kombu.exceptions.OperationalError):
        return False
    finally:
        control.close()


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


@pytest.mark.django_db(transaction=True)
def test_health_names_a_queue_no_worker_consumes(private_redis) -> None:
    # The predict worker dead and the batch worker alive: every single job waits in its queue
    # for ever, and a check that any worker answered a ping said "ok".
    port = processes.free_port()
    with ExitStack() as stack:
        web = processes.start_web(port, private_redis.url)
        stack.callback(processes.stop, web)
        worker = processes.start_worker(private_redis.url, queues=("batch", "training", "default"))
        stack.callback(processes.stop, worker)
        status, body = get_health(port)
        assert status == 503
        assert "workers" in body["failing"]
        assert body["checks"]["workers"]["queues_without_workers"] == ["predict"]
