"""Celery tasks for the registry: ids in, one domain function call."""

from typing import Any

from billiard.process import current_process
from celery import shared_task
from django.conf import settings

from . import training_runs


@shared_task(
    name="modelregistry.tasks.retrain",
    acks_late=True,
    time_limit=settings.TASK_TIME_LIMIT,
    soft_time_limit=settings.TASK_TIME_LIMIT - 30,
    bind=True,
)
def retrain(
    self: Any,
    spec_id: Any = None,
    trigger: str = "schedule",
    run_id: int | None = None,
    *extra: Any,
    **unexpected: Any,
) -> int | None:
    """Train a spec (the message a beat PeriodicTask sends). Bad arguments end as a failed run."""
    if extra:  # a hand-made PeriodicTask with too many positional args
        unexpected = {**unexpected, f"{len(extra)} extra positional argument(s)": extra}
    # A prefork pool's child may end itself on a cancel; a solo or thread pool's process is
    # the whole worker, whose fit a cancel only leaves unrecorded.
    in_pool_process = current_process().name.startswith("ForkPoolWorker")
    run = training_runs.handle_message(
        spec_id, trigger, run_id, unexpected, self.request.id or "", in_pool_process=in_pool_process
    )
    return run.pk if run else None


@shared_task(
    name="modelregistry.tasks.verify_version",
    acks_late=True,
    time_limit=settings.TASK_TIME_LIMIT,
    soft_time_limit=settings.TASK_TIME_LIMIT - 30,
)
def verify_version(version_id: int) -> dict[str, Any]:
    """Load a version in this worker, checking its sha256 and unpickling it safely."""
    from .loader import verify
    from .models import ModelVersion

    return verify(ModelVersion.objects.select_related("registered_model").get(pk=version_id))
