"""Fixtures for the fault-injection tests: a private stack and an iris model to score with."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes
from tests.builders import make_version
from tests.faults.harness import Stack


@pytest.fixture
def iris_version(transactional_db) -> object:
    return make_version()


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[processes.RedisServer]:
    """A Redis without persistence: stopping it forgets every queued message."""
    with processes.redis_server(tmp_path / "redis", appendonly=False) as server:
        yield server


@pytest.fixture
def stack(volatile_redis: processes.RedisServer, iris_version: object) -> Iterator[Stack]:
    """Web, one worker and beat (reconciling every second) on the test's own Redis."""
    running = Stack(volatile_redis.url)
    try:
        yield running.start()
    finally:
        running.close()
