"""PostgreSQL stopped for 10 s under load, on a private cluster: every job succeeds once,
within a minute of its return.

The whole stack (web, worker, beat) runs on a PostgreSQL cluster of this test's own, so
stopping it disturbs no other test; the test reads the outcome with psycopg.
"""

import json
import time
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from tests import processes
from tests.builders import IRIS_FEATURES, iris_estimator, iris_rows
from tests.faults.harness import FAULT_ENV, Api, Figures, iris_csv
from tests.faults.postgres import PrivatePostgres

SETUP = """
from rest_framework.authtoken.models import Token
from tests.base import make_user
from tests.builders import make_version
make_version()
print(Token.objects.create(user=make_user("pg-fault")).key)
"""


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def manage(database_url: str, *args: str) -> str:
    env = processes.process_env(DATABASE_URL=database_url)
    done = processes.run_python(["manage.py", *args], env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def job_rows(database_url: str, ids: list[str]) -> dict[str, dict]:
    query = (
        "SELECT id::text, status, kind, outputs, inputs, rows_done, rows_total, rows_failed,"
        " error_code, attempts FROM predictions_predictionjob WHERE id = ANY(%s)"
    )
    with psycopg.connect(database_url, connect_timeout=3) as connection:
        rows = connection.execute(query, [[uuid.UUID(value) for value in ids]]).fetchall()
    names = ["id", "status", "kind", "outputs", "inputs", "rows_done", "rows_total", "failed"]
    names += ["error_code", "attempts"]
    return {row[0]: dict(zip(names, row, strict=True)) for row in rows}


def successful_writes(database_url: str) -> dict[str, int]:
    query = "SELECT result FROM django_celery_results_taskresult WHERE status = 'SUCCESS'"
    counts: dict[str, int] = {}
    with psycopg.connect(database_url, connect_timeout=3) as connection:
        for (raw,) in connection.execute(query):
            summary = json.loads(raw or "null")
            if isinstance(summary, dict) and summary.get("status") == "succeeded":
                counts[summary["job"]] = counts.get(summary["job"], 0) + 1
    return counts


def finished(database_url: str, ids: list[str]) -> int:
    try:
        rows = job_rows(database_url, ids).values()
    except psycopg.OperationalError:
        return 0  # still coming back
    return sum(row["status"] in ("succeeded", "failed", "cancelled") for row in rows)


def is_right(row: dict) -> bool:
    if row["status"] != "succeeded":
        return False
    if row["kind"] == "batch":
        return row["rows_done"] == row["rows_total"] and row["failed"] == 0
    matrix = np.array([[line[name] for name in IRIS_FEATURES] for line in row["inputs"]])
    expected = iris_estimator().predict(matrix).tolist()
    return [line["prediction"] for line in row["outputs"]] == expected


@pytest.mark.slow
def test_postgres_stopped_for_10_seconds_under_load_loses_nothing(
    postgres: PrivatePostgres, tmp_path
) -> None:
    manage(postgres.url, "migrate", "-v0")
    token = manage(postgres.url, "shell", "-c", SETUP)
    # A lease far beyond the test: every job must finish because the workers did their
    # database steps again once it was back, not because the reconciler re-ran them.
    env = {
        **FAULT_ENV,
        "DATABASE_URL": postgres.url,
        "JOB_LEASE_SECONDS": "600",
        "SINGLE_JOB_LEASE_SECONDS": "600",
    }
    port = processes.free_port()
    with processes.redis_server(tmp_path / "redis", appendonly=False) as redis:
        started = [
            processes.start_web(port, redis.url, **env),
            processes.start_beat(redis.url, **env),
            processes.start_worker(redis.url, **env),
        ]
        try:
            api = Api(port, token)
            status, batch = api.submit_file("rows.csv", iris_csv(20_000), id_column="row_id")
            assert status == 201, batch
            ids = [batch["id"], *api.submit_many([iris_rows(1 + i % 3, i) for i in range(300)])]
            processes.wait_for(lambda: finished(postgres.url, ids) >= 20, 60, "some jobs done")

            done_at_stop = finished(postgres.url, ids)
            postgres.stop()
            time.sleep(10)
            postgres.start()
            restarted = time.monotonic()
            deadline = restarted + 60
            while finished(postgres.url, ids) < len(ids) and time.monotonic() < deadline:
                time.sleep(0.5)
            seconds = time.monotonic() - restarted
            alive = all(process.poll() is None for process in started)
        finally:
            for process in reversed(started):
                processes.stop(process, timeout=10)

    rows = job_rows(postgres.url, ids)
    writes = successful_writes(postgres.url)
    figures = Figures(http_5xx=api.server_errors)
    told = ("kind", "status", "error_code", "attempts", "rows_done", "rows_total")
    wrong: list[dict[str, object]] = [
        {key: row[key] for key in told}
        for row in rows.values()
        if row["status"] not in ("queued", "running") and not is_right(row)
    ]
    figures.count_lost(len(set(ids) - set(rows)), wrong)
    figures.stuck = sum(row["status"] in ("queued", "running") for row in rows.values())
    figures.duplicated = sum(count > 1 for job_id, count in writes.items() if job_id in rows)
    figures.notes.update(done_at_stop=done_at_stop, recovered_in_s=round(seconds, 1))
    figures.report("PostgreSQL stopped 10 s under load")
    figures.assert_zero()
    assert alive  # web, worker and beat carried on without a restart
