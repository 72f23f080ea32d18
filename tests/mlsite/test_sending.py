"""Sending task messages: each thread keeps a producer, made afresh where it cannot be trusted."""

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pytest
from celery import Task
from celery._state import _task_stack
from kombu import Connection

from mlsite import sending
from predictions.tasks import run_batch_job


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

    monkeypatch.setattr(sending.app.amqp, "send_task_message", broker_gone)
    with pytest.raises(sending.BrokerUnavailable):
        sending.publish("predictions.tasks.score_single_jobs", args=["a-job"])
    assert sending._producer() is not used


def sent_message(send: Callable[[], object]) -> dict[str, Any]:
    """What `send` put on the predict queue, sent through kombu's in-memory transport."""
    with Connection("memory://") as connection:
        producer = sending.app.amqp.Producer(connection, auto_declare=False)
        sending._local.held = (os.getpid(), producer)
        send()
        message = connection.SimpleQueue("predict").get(timeout=1)
        properties = dict(message.properties)
        properties.pop("delivery_tag")
        return {"headers": message.headers, "properties": properties, "body": message.payload}


@contextmanager
def running_as(task: Task, task_id: str, root_id: str) -> Iterator[None]:
    """As inside a worker running `task` (what Celery's tracer pushes)."""
    task.push_request(id=task_id, root_id=root_id, called_directly=False)
    _task_stack.push(task)
    try:
        yield
    finally:
        _task_stack.pop()
        task.pop_request()


@pytest.mark.parametrize("in_a_task", [False, True], ids=["from-a-request", "from-a-task"])
def test_a_message_is_the_one_celerys_send_task_would_send(in_a_task: bool) -> None:
    name, args, task_id = "predictions.tasks.score_single_jobs", ["a-job"], "the-task-id"
    context = running_as(run_batch_job, "parent-id", "root-id") if in_a_task else nullcontext()
    with context:
        ours = sent_message(lambda: sending.publish(name, args=args, task_id=task_id, priority=3))
        celerys = sent_message(
            lambda: sending.app.send_task(
                name, args=args, task_id=task_id, priority=3, producer=sending._producer()
            )
        )
        children = [result.id for result in run_batch_job.request.children or []]
    for quirk in ("argsrepr", "kwargsrepr"):  # send_task copies these into the properties too
        celerys["properties"].pop(quirk, None)
    assert ours == celerys
    assert ours["headers"]["parent_id"] == ("parent-id" if in_a_task else None)
    assert ours["headers"]["root_id"] == ("root-id" if in_a_task else task_id)
    assert ours["properties"]["delivery_info"]["routing_key"] == "predict"
    assert children == ([task_id, task_id] if in_a_task else [])  # both linked to the parent


def test_a_forked_child_names_itself_as_the_origin_of_what_it_sends() -> None:
    parents = sending._origin()  # remembered in the parent before the fork
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its origin and leave, whatever happens, without pytest
        try:
            os.write(writer, sending._origin().encode())
        finally:
            os._exit(0)
    os.close(writer)
    with open(reader, "rb") as pipe:
        childs = pipe.read().decode()
    os.waitpid(child, 0)
    assert parents == f"gen{os.getpid()}@{socket.gethostname()}"
    assert childs == f"gen{child}@{socket.gethostname()}"
