"""A database step that fails once, at a chosen call, as a restart or a lost connection would."""

from collections.abc import Callable
from typing import Any

from django.db import OperationalError


def fails_at_call(step: Callable[..., Any], call: int = 1) -> Callable[..., Any]:
    """`step`, except that its `call`-th call raises OperationalError instead of running."""
    calls = 0

    def step_unless_its_that_call(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            raise OperationalError("server closed the connection unexpectedly")
        return step(*args, **kwargs)

    return step_unless_its_that_call


def answer_lost_at_call(step: Callable[..., Any], call: int = 1) -> Callable[..., Any]:
    """`step`, except that its `call`-th call raises OperationalError after it ran (and
    committed): the database did the work, and the answer was lost with the connection."""
    calls = 0

    def step_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        answer = step(*args, **kwargs)
        if calls == call:
            raise OperationalError("server closed the connection unexpectedly")
        return answer

    return step_then_lose_the_answer
