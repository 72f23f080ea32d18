"""The Celery app, configured from Django settings under the CELERY_ namespace."""

import os

from celery import Celery
from celery.signals import setup_logging, task_postrun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlsite.settings")

app = Celery("mlsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def use_django_logging(
    loglevel: int | str | None = None, logfile: str | None = None, **_: object
) -> None:
    # With a receiver here Celery leaves the root logger alone, so workers and beat log
    # through settings.LOGGING: the same format, job and task ids on every line. The
    # command line's --loglevel and --logfile still apply.
    import logging.config

    from django.conf import settings

    import mlsite.logs  # noqa: F401 - connects the task signals that set the ids

    logging.config.dictConfig(settings.LOGGING)
    root = logging.getLogger()
    if loglevel:
        root.setLevel(loglevel)
    if logfile:
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler):
                to_file = logging.FileHandler(logfile)
                to_file.setFormatter(handler.formatter)
                to_file.filters = list(handler.filters)
                root.removeHandler(handler)
                root.addHandler(to_file)


@worker_process_init.connect
def limit_native_threads(**_: object) -> None:
    # Each pool process scores alone; letting BLAS/OpenMP spawn one thread per core in
    # every process oversubscribes the CPUs and makes models like HistGradientBoosting crawl.
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ.get("WORKER_NATIVE_THREADS", "1")))


@task_postrun.connect
def close_stale_connections(**_: object) -> None:
    # Connections outlive a task (CELERY_DB_REUSE_MAX); like Django after each request, drop
    # the ones that errored or are older than CONN_MAX_AGE, so a lost database is reconnected.
    from django.db import close_old_connections

    close_old_connections()
