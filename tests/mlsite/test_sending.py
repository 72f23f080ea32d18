"""Sending task messages: each thread keeps a producer, made afresh where it cannot be trusted."""

import os
import threading
from collections.abc import Iterator

import pytest

from mlsite import sending


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    sending._drop_producer()
    yield
    sending._drop_producer()
    sending.breaker.reset()


def producer_of_another_thread() -> sending.Producer:
    made: list[sending.Producer] = []
    thread = threading.Thread(target=lambda: made.append(sending._producer()))
    thread.start()
    thread.join()
    return made[0]


def test_a_thread_keeps_its_producer_and_other_threads_have_their_own() -> None:
    mine = sending._producer()
    assert sending._producer() is mine
    assert producer_of_another_thread() is not mine


def test_a_forked_child_does_not_send_on_its_parents_connection(monkeypatch) -> None:
    parents = sending._producer()
    child_pid = os.getpid() + 1
    monkeypatch.setattr(sending.os, "getpid", lambda: child_pid)
    assert sending._producer() is not parents


def test_after_a_failed_send_the_next_one_connects_afresh(monkeypatch) -> None:
    used = sending._producer()

    def broker_gone(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(sending.app, "send_task", broker_gone)
    with pytest.raises(sending.BrokerUnavailable):
        sending.publish("predictions.tasks.score_single_jobs", args=["a-job"])
    assert sending._producer() is not used
