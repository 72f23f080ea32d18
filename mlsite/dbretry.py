"""Doing one database step again, in the same process, when the database was briefly away.

A micro-batch of single jobs has no Celery retry (a flush that raises has its messages
acked, predictions/microbatches.py): a database error after its claim left the jobs it
claimed running until their lease ran out (TASK_TIME_LIMIT + 60 s by default), for a
restart or a locked SQLite that lasted a second. Each step retried here is safe to repeat:
it runs in one transaction, and its writes are conditional on the row still being in the
state the step expects.
"""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds between attempts: about half a minute in all, well inside a task's time limit,
# and never more than 4 s, so a database back again is used within seconds.
DELAYS = (0.25, 0.5, 1.0, 2.0, *[4.0] * 7)


def retrying(step: Callable[[], T], what: str) -> T:
    """step(), tried again after each of DELAYS while it raises OperationalError."""
    for delay in DELAYS:
        try:
            return step()
        except OperationalError as exc:
            logger.warning("%s: database error (%s); trying again in %s s", what, exc, delay)
            connection.close()  # the next query connects afresh
            time.sleep(delay)
    return step()
