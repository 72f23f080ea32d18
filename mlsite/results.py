"""django-celery-results' database backend, kept from stopping a worker when the database
restarted.

A worker's main process writes result rows too: a message that arrives expired or revoked
is stored as REVOKED there, in the consumer's message handler, where any exception stops
the whole worker ("Unrecoverable error"). That process runs no tasks, so nothing closes its
connection after a database restart, and the next such write failed on it (fault tests,
PostgreSQL outage). django-celery-results retries only InterfaceError; psycopg 3 reports a
closed connection as OperationalError.
"""

import logging
from typing import Any

from celery import states
from celery.exceptions import BackendStoreError
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django_celery_results.backends.database import DatabaseBackend as ResultsDatabaseBackend

logger = logging.getLogger(__name__)


class DatabaseBackend(ResultsDatabaseBackend):
    """With result_backend_always_retry, a lost connection is retried on a new one."""

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, InterfaceError | OperationalError):
            connection.close()  # the retry connects afresh
            return True
        return False

    def mark_as_revoked(
        self,
        task_id: str,
        reason: str = "",
        request: Any = None,
        store_result: bool = True,
        state: str = states.REVOKED,
    ) -> None:
        """As Celery's, but a database that is away costs the row, never the worker."""
        try:
            super().mark_as_revoked(task_id, reason, request, store_result, state)
        except (DatabaseError, BackendStoreError) as exc:  # the latter once retries run out
            logger.warning(
                "task %s revoked (%s); its result row not written: %s", task_id, reason, exc
            )
