"""The Celery app, configured from Django settings under the CELERY_ namespace."""

import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, worker_process_init
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlsite.settings")


def _reuse_redis_clients() -> None:
    """Have kombu's Redis channels keep one client per connection pool.

    kombu builds a new redis.Redis for every command it sends (each publish, each ack), and
    building one fills a dict of some 200 response callbacks: 4-5 % of the CPU of the web
    and worker processes under the single-job bench, more than the LPUSH itself (py-spy). A
    client holds no connection of its own (it takes one from the pool per command), so one
    per pool is what redis-py recommends; a channel that drops its pool gets a new client.
    """
    create = kombu_redis.Channel._create_client

    def create_or_reuse(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return create(self, asynchronous=True)
        client = self.__dict__.get("_reused_client")
        if client is None or client.connection_pool is not self.pool:
            client = self.__dict__["_reused_client"] = create(self)
        return client

    setattr(kombu_redis.Channel, "_create_client", create_or_reuse)  # noqa: B010 - mypy


_reuse_redis_clients()

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
    from django.conf import settings
    from threadpoolctl import threadpool_limits

    threadpool_limits(settings.WORKER_NATIVE_THREADS)


@task_postrun.connect
def close_stale_connections(**_: object) -> None:
    # Connections outlive a task (CELERY_DB_REUSE_MAX); like Django after each request, drop
    # the ones that errored or are older than CONN_MAX_AGE, so a lost database is reconnected.
    from django.db import close_old_connections

    close_old_connections()
