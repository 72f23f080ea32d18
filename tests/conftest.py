"""Fixtures shared by the whole suite."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """postgres_only tests, which need a server to end connections of, are left out of a run
    on SQLite (deselected, as -m leaves tests out) and run in the PostgreSQL pass."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    elsewhere = [item for item in items if item.get_closest_marker("postgres_only")]
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = [item for item in items if not item.get_closest_marker("postgres_only")]


@pytest.fixture(scope="session")
def live_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    """One real Celery worker process on every queue, for tests that only need it to run.

    Small batch chunks, so a batch of a few thousand rows has many (cancel lands between
    them); a prefetch that lets micro-batches of single jobs fill, as in production.
    """
    worker_env = {"BATCH_CHUNK_ROWS": "200", "CELERY_WORKER_PREFETCH_MULTIPLIER": "32"}
    with django_db_blocker.unblock(), processes.celery_worker(**worker_env) as worker:
        yield worker


@pytest.fixture(scope="session")
def live_web(django_db_setup, django_db_blocker) -> Iterator[str]:
    """A real gunicorn on the test database, for the client and the browser; yields its URL."""
    port = processes.free_port()
    with django_db_blocker.unblock():
        web = processes.start_web(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        processes.stop(web)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[processes.RedisServer]:
    """A Redis of this test's own, which it may stop and start."""
    with processes.redis_server(tmp_path / "redis") as server:
        yield server
