"""Announcements of finished jobs: a process keeps them only once one of its requests waits."""

import json

from predictions.waiting import Waiting

ANNOUNCEMENT = json.dumps([{"id": "job-1", "state": {"status": "succeeded"}}]).encode()


def test_a_process_that_never_waited_keeps_no_announcements() -> None:
    waiting = Waiting()  # as in a worker, whose listener is there for its caches
    waiting.deliver(ANNOUNCEMENT)
    assert not waiting._recent
    with waiting.expect("job-1", see_recent=True) as waiter:
        assert not waiter.finished


def test_once_a_request_is_to_wait_a_job_announced_just_before_its_wait_is_seen() -> None:
    waiting = Waiting()
    waiting.keep_announcements()  # listening_epoch(), before the request sends its job
    waiting.deliver(ANNOUNCEMENT)
    with waiting.expect("job-1", see_recent=True) as waiter:
        assert waiter.finished
        assert waiter.state == {"status": "succeeded"}


def test_a_waiting_request_is_woken_by_its_announcement() -> None:
    waiting = Waiting()
    with waiting.expect("job-1", see_recent=False) as waiter:
        waiting.deliver(ANNOUNCEMENT)
        assert waiter.wait(1.0)
        assert waiter.state == {"status": "succeeded"}
