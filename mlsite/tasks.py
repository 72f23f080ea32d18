"""Small tasks of the project itself."""

from dataclasses import asdict

from celery import shared_task

from predictions import retention


@shared_task(name="mlsite.tasks.ping", time_limit=30, soft_time_limit=20)
def ping(value: str) -> str:
    """Echoes its argument: proves a worker runs tasks and writes their results."""
    return value


@shared_task(name="mlsite.tasks.purge_expired_results", time_limit=600, soft_time_limit=570)
def purge_expired_results() -> dict[str, int]:
    """Beat runs this hourly: drops payloads and task results past RESULT_RETENTION_DAYS."""
    return asdict(retention.purge_expired())
