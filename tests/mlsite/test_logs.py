"""Structured logs: the job id and task id ride on every line about a job."""

import io
import json
import logging
import os
import uuid
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from mlsite.logs import JobContextFilter, JsonFormatter, job_context, job_id_among
from predictions.client import Client
from predictions.models import PredictionJob
from tests import processes
from tests.base import make_user
from tests.builders import IRIS_FEATURES, iris_rows, make_version


def captured_logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_json_line_inside_a_job_context_names_the_job() -> None:
    logger, stream = captured_logger(JsonFormatter())
    job_id = uuid.uuid4()
    with job_context(job_id):
        logger.info("scored %d rows", 3)
    logger.info("after the job")
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "scored 3 rows"
    assert inside["job_id"] == str(job_id)
    assert inside["level"] == "INFO"
    assert after["job_id"] is None


def test_an_explicit_job_id_in_extra_wins_over_the_context() -> None:
    logger, stream = captured_logger(logging.Formatter("%(job_id)s %(task_id)s %(message)s"))
    with job_context("outer"):
        logger.info("one of many", extra={"job_id": "inner"})
    assert stream.getvalue() == "inner - one of many\n"


def test_an_exception_is_kept_in_the_json_line() -> None:
    logger, stream = captured_logger(JsonFormatter())
    try:
        raise ValueError("bad row")
    except ValueError:
        logger.exception("job failed")
    line = json.loads(stream.getvalue())
    assert "ValueError: bad row" in line["exception"]


@pytest.mark.parametrize("debug", ["1", "0"])
def test_a_request_warning_is_written_once_in_the_configured_format(
    debug: str, tmp_path: Path
) -> None:
    """`make run` runs with DEBUG=1, where Django's own console handler used to print every
    django.request line a second time, without the format."""
    code = (
        "import django; django.setup(); from django.test import Client; "
        "Client().get('/no-such-page/')"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mlsite.settings",
        "DEBUG": debug,
        "SECRET_KEY": "x" * 50,
        "ALLOWED_HOSTS": "testserver",
        "LOG_FORMAT": "plain",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    out = processes.run_python(["-c", code], env)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "/no-such-page/" in line]
    assert len(lines) == 1, out.stderr
    assert " WARNING django.request [job=- task=-] Not Found: /no-such-page/" in lines[0]


def test_a_task_works_on_the_job_named_by_its_first_argument_or_job_id_keyword() -> None:
    job_id = str(uuid.uuid4())
    assert job_id_among((job_id,), {}) == job_id
    assert job_id_among((), {"job_id": job_id}) == job_id
    assert job_id_among((42,), {}) is None
    assert job_id_among(None, None) is None


def finished(job_ids: list, timeout: float = 60) -> None:
    from predictions.models import FINISHED, PredictionJob

    def done() -> bool:
        return PredictionJob.objects.filter(pk__in=job_ids, status__in=FINISHED).count() == len(
            job_ids
        )

    processes.wait_for(done, timeout, "jobs to finish")


@pytest.mark.django_db(transaction=True)
def test_a_workers_json_lines_about_a_job_carry_its_job_and_task_ids(
    tmp_path: Path, private_redis: processes.RedisServer
) -> None:
    # A web server and a worker of this test's own, on its own Redis: the suite's shared
    # worker must not take these messages, or their lines would land in another log.
    version = make_version()
    token = Token.objects.create(user=make_user()).key
    log = tmp_path / "worker.log"
    rows = tmp_path / "rows.csv"
    rows.write_text(
        ",".join(IRIS_FEATURES)
        + "\n"
        + "\n".join(",".join(str(value) for value in row.values()) for row in iris_rows(50))
    )
    port = processes.free_port()
    web = processes.start_web(port, redis_url=private_redis.url)
    try:
        with processes.celery_worker(
            redis_url=private_redis.url,
            extra_args=("--loglevel", "INFO", "--logfile", str(log)),
            LOG_FORMAT="json",
            BATCH_CHUNK_ROWS="20",  # three chunks, each its own task
        ):
            client = Client(f"http://127.0.0.1:{port}", token)
            batch = PredictionJob.objects.get(pk=client.submit_file(version.ref, rows).id)
            single = PredictionJob.objects.get(pk=client.submit_rows(version.ref, iris_rows(2)).id)
            finished([batch.pk, single.pk])
    finally:
        processes.stop(web)

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    about_batch = [line for line in lines if line["job_id"] == str(batch.pk)]
    messages = " ".join(line["message"] for line in about_batch)
    assert f"run_batch_job[{batch.task_id}] received" in messages
    assert f"run_batch_job[{batch.task_id}] succeeded" in messages
    chunk_lines = [line for line in about_batch if "score_batch_chunk" in line["message"]]
    assert len([line for line in chunk_lines if "succeeded" in line["message"]]) == 3
    assert all(line["task_id"] for line in about_batch)
    # No line names the job's task without also naming the job.
    for line in lines:
        if batch.task_id in line["message"]:
            assert line["job_id"] == str(batch.pk), line
    for line in lines:  # a micro-batch's lines name all of its jobs
        if single.task_id in line["message"]:
            assert str(single.pk) in line["job_id"], line


def test_a_micro_batch_names_each_of_its_jobs() -> None:
    class Request:  # the shape of celery-batches' SimpleRequest
        def __init__(self, job_id: str) -> None:
            self.args = [job_id]

    ids = [str(uuid.uuid4()) for _ in range(3)]
    assert job_id_among(([Request(i) for i in ids],), {}) == ",".join(ids)
