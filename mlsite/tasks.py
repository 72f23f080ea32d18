"""Small tasks of the project itself."""

from celery import shared_task


@shared_task(name="mlsite.tasks.ping", time_limit=30, soft_time_limit=20)
def ping(value: str) -> str:
    """Echoes its argument: proves a worker runs tasks and writes their results."""
    return value
