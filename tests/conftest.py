"""Fixtures shared by the whole suite."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes


@pytest.fixture(scope="session")
def live_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    """One real Celery worker process on every queue, for tests that only need it to run.

    Small batch chunks, so a batch of a few thousand rows has many (cancel lands between
    them); a prefetch that lets micro-batches of single jobs fill, as in production.
    """
    worker_env = {"BATCH_CHUNK_ROWS": "200", "CELERY_WORKER_PREFETCH_MULTIPLIER": "32"}
    with django_db_blocker.unblock(), processes.celery_worker(**worker_env) as worker:
        yield worker


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[processes.RedisServer]:
    """A Redis of this test's own, which it may stop and start."""
    with processes.redis_server(tmp_path / "redis") as server:
        yield server
