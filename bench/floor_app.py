"""The bare Celery app of the floor measurement: a no-op task, a Redis broker and result backend.

No Django, no database, no HTTP: the same message settings as the project (json, late acks),
so the floor is what Celery's own round trip costs on this machine.
"""

import os

from celery import Celery

REDIS_URL = os.environ.get("BENCH_FLOOR_REDIS_URL", "redis://127.0.0.1:6379/1")

app = Celery("bench_floor", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "64")),
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="bench.noop")
def noop(index: int) -> int:
    return index
