"""The Celery app, configured from Django settings under the CELERY_ namespace."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlsite.settings")

app = Celery("mlsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def limit_native_threads(**_: object) -> None:
    # Each pool process scores alone; letting BLAS/OpenMP spawn one thread per core in
    # every process oversubscribes the CPUs and makes models like HistGradientBoosting crawl.
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ.get("WORKER_NATIVE_THREADS", "1")))
