"""Pages asked for while the database is away: a 503 and one log line, not a 500 and a
traceback (the API answers so already, in mlsite.api)."""

import logging
from collections.abc import Callable

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)


# SQLite raises OperationalError for a schema the code does not match too (a release whose
# migrations were not applied): a fault to show with its traceback, not an outage to wait out.
SCHEMA_MISMATCH = ("no such table", "no such column", "has no column named")


def is_outage(exc: Exception) -> bool:
    """Whether the error says the database is away or busy (refusing connections, restarting,
    locked past SQLite's busy timeout), so the same request will do shortly."""
    if not isinstance(exc, OperationalError):
        return False
    message = str(exc)
    return not any(mismatch in message for mismatch in SCHEMA_MISMATCH)


class DatabaseUnavailableMiddleware:
    """An admin page, the dashboard or /metrics whose database is restarting, failing over or
    refusing connections answers 503 with Retry-After, as the API does: a 500 said the site
    was broken, and logged some 60 lines of traceback per request for the whole outage."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not is_outage(exc):
            return None
        logger.warning("database unavailable for %s: %s", request.path, exc)
        page = "The database is unavailable; try again shortly.\n"
        response = HttpResponse(page, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = "5"
        return response
