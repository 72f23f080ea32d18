"""Settings come from the environment, and a bad value stops start-up naming the variable."""

import os
import subprocess

import pytest

from tests.processes import run_python


def django_check(**env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DEBUG": "0", "SECRET_KEY": "x" * 50, **env}
    return run_python(["manage.py", "check"], environment, timeout=60)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "nosuchdb://x/y"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("REDIS_URL", "redis://127.0.0.1:63790000/0"),  # web took it as a Redis that is away
        ("MAX_INLINE_ROWS", "many"),
        ("DEBUG", "perhaps"),
        ("TASK_TIME_LIMIT", "ten"),
        ("LOGIN_THROTTLE_RATE", "lots"),
        ("API_THROTTLE_RATE", "lots"),  # started, then answered 500 to every API request
        ("PROXY_COUNT", "-1"),  # started, then a sign-in through one proxy answered 500
        ("TASK_TIME_LIMIT", "20"),  # a soft limit of -10 s stopped every task at once
        ("WORKER_NATIVE_THREADS", "two"),  # each pool process logged a ValueError, unlimited
        ("BATCH_CHUNK_ROWS", "0"),  # every batch job failed: "range() arg 3 must not be zero"
        ("RETENTION_BATCH_SIZE", "0"),  # retention purged nothing, and said nothing
        ("LOG_LEVEL", "LOUD"),  # "Unable to configure root logger", not naming the variable
        ("MAX_ARTIFACT_MEMORY_BYTES", "100000000"),  # below what its reader starts with
    ],
)
def test_a_malformed_variable_stops_start_up_naming_it(variable: str, value: str) -> None:
    result = django_check(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr


def test_log_level_is_read_in_any_case() -> None:
    result = django_check(LOG_LEVEL="debug")  # as celery --loglevel takes it
    assert result.returncode == 0, result.stderr


def test_secret_key_is_required_when_debug_is_off() -> None:
    result = django_check(SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_sqlite_runs_in_wal_mode_with_immediate_transactions(db) -> None:
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.fail("this test runs in the SQLite pass only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 30000
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
