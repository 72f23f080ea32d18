"""Structured logs: every line about a job carries its job id and Celery task id.

The ids live in context variables: Celery's task signals set the task id (and the job id,
when the task's first argument is a job's UUID) around each task, and `job_context` sets
the job id wherever else code works on one job. A logging filter copies them onto every
record, so plain `logger.info(...)` calls need no extra arguments.
"""

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from celery.signals import task_postrun, task_prerun

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
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get() or EMPTY
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id_var.get() or EMPTY
        return True


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


def job_id_among(args: tuple | list | None, kwargs: dict | None) -> str | None:
    """The job a task works on: its `job_id` keyword, or a UUID first argument."""
    if kwargs and kwargs.get("job_id"):
        return str(kwargs["job_id"])
    if args:
        try:
            return str(uuid.UUID(str(args[0])))
        except ValueError:
            return None
    return None


@task_prerun.connect
def _enter_task(
    task_id: str, args: tuple | None = None, kwargs: dict | None = None, **_: Any
) -> None:
    task_id_var.set(task_id)
    job_id_var.set(job_id_among(args, kwargs))


@task_postrun.connect
def _leave_task(**_: Any) -> None:
    # A worker runs one task at a time per pool process (or thread), so clearing is enough.
    task_id_var.set(None)
    job_id_var.set(None)
