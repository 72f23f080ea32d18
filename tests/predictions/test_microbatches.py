"""Micro-batches' error handling, on the objects billiard really hands over."""

import pytest
from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError

from predictions.microbatches import raised


def caught(exception: BaseException) -> ExceptionInfo:
    try:
        raise exception
    except BaseException:
        return ExceptionInfo()


@pytest.mark.parametrize(
    "given",
    [
        # ExceptionInfo wraps what it caught in an ExceptionWithTraceback, as the pool hands it
        pytest.param(lambda lost: caught(lost), id="pool-callback"),
        pytest.param(lambda lost: ExceptionWithTraceback(lost, "tb"), id="wrapped"),
        pytest.param(lambda lost: lost, id="bare"),
    ],
)
def test_a_lost_pool_process_is_told_apart_however_billiard_wraps_it(given) -> None:
    # How the pool reports a micro-batch whose process died (kill -9, out of memory): its
    # messages go back to the queue only when this is recognised.
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL).")
    assert raised(given(lost)) is lost


def test_any_other_error_is_itself() -> None:
    error = ValueError("boom")
    assert raised(caught(error)) is error
