"""Structured logs: the job id and task id ride on every line about a job."""

import io
import json
import logging
import uuid

from mlsite.logs import JobContextFilter, JsonFormatter, job_context, job_id_among


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


def test_a_task_works_on_the_job_named_by_its_first_argument_or_job_id_keyword() -> None:
    job_id = str(uuid.uuid4())
    assert job_id_among((job_id,), {}) == job_id
    assert job_id_among((), {"job_id": job_id}) == job_id
    assert job_id_among((42,), {}) is None
    assert job_id_among(None, None) is None
