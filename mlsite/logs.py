"""Structured logs: every line about a job carries its job id and Celery task id.

The ids live in context variables: Celery's task signals set the task id (and the job id,
when the task's first argument is a job's UUID) around each task, and `job_context` sets
the job id wherever else code works on one job. A logging filter copies them onto every
record, so plain `logger.info(...)` calls need no extra arguments.
"""

import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from celery.signals import task_postrun, task_prerun
from django.utils.module_loading import import_string

# Tasks whose first argument is not a job id, and the function that finds their job.
JOB_OF_TASK = {"predictions.tasks.score_batch_chunk": "predictions.batching.job_of_chunk"}
MAX_IDS_PER_LINE = 20

job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)
EMPTY = "-"


@contextmanager
def job_context(job_id: object) -> Iterator[None]:
    """Lines logged inside the block name this job."""
    token = job_id_var.set(str(job_id))
    try:
        yield
    finally:
        job_id_var.reset(token)


class JobContextFilter(logging.Filter):
    """Adds `job_id` and `task_id` to every record; values passed in `extra=` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        celery_task, celery_job = _celery_ids(record)
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get() or celery_job or EMPTY
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id_var.get() or celery_task or EMPTY
        return True


LEADING_UUID = re.compile(
    r"^[(\[]?'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'"
)


def _celery_ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """Celery's worker logs "Task name[id] received" before any task runs, with the task
    id and the arguments' repr among its arguments: a job id is a UUID first argument."""
    if not (record.name.startswith("celery.") and isinstance(record.args, dict)):
        return None, None
    task_id = record.args.get("id")
    job = LEADING_UUID.match(str(record.args.get("args") or ""))
    return (str(task_id) if task_id else None), (job[1] if job else None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": _or_none(getattr(record, "job_id", None)),
            "task_id": _or_none(getattr(record, "task_id", None)),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _or_none(value: object) -> str | None:
    return None if value in (None, EMPTY) else str(value)


def job_id_among(args: tuple | list | None, kwargs: dict | None, task_name: str = "") -> str | None:
    """The job a task works on: its `job_id` keyword, a UUID first argument, the jobs of a
    micro-batch (comma-separated), or what JOB_OF_TASK finds for the task."""
    if kwargs and kwargs.get("job_id"):
        return str(kwargs["job_id"])
    if not args:
        return None
    first = args[0]
    if isinstance(first, list | tuple):  # celery-batches: one request per job
        ids = [str(request.args[0]) for request in first if getattr(request, "args", None)]
        return ",".join(ids[:MAX_IDS_PER_LINE]) or None
    if task_name in JOB_OF_TASK:
        try:
            found = import_string(JOB_OF_TASK[task_name])(first)
        except Exception:  # a log context must never break the task it describes
            return None
        return str(found) if found else None
    try:
        return str(uuid.UUID(str(first)))
    except ValueError:
        return None


@task_prerun.connect
def _enter_task(
    task_id: str,
    task: Any = None,
    args: tuple | None = None,
    kwargs: dict | None = None,
    **_: Any,
) -> None:
    task_id_var.set(task_id)
    job_id_var.set(job_id_among(args, kwargs, getattr(task, "name", "")))


@task_postrun.connect
def _leave_task(**_: Any) -> None:
    # A worker runs one task at a time per pool process (or thread), so clearing is enough.
    task_id_var.set(None)
    job_id_var.set(None)
