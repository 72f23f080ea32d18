"""/healthz: is each part of the stack answering? 200 when all are, 503 naming the rest."""

import threading
import time
from collections.abc import Callable
from typing import Any

import kombu.exceptions
import redis.exceptions
from django.db import connection
from django.http import HttpRequest, JsonResponse

from . import broker
from .celery import app as celery_app
from .scheduler import HEARTBEAT_KEY

BEAT_STALE_AFTER = 30  # seconds; beat ticks at least every 5 s


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True, "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    broker.client().ping()
    return {"ok": True}


def check_workers() -> dict[str, Any]:
    replies = celery_app.control.ping(timeout=1.0)
    names = sorted(name for reply in replies for name in reply)
    return {"ok": bool(names), "workers": names}


def check_beat() -> dict[str, Any]:
    beat = broker.client().get(HEARTBEAT_KEY)
    age = time.time() - float(beat) if beat else None
    return {"ok": age is not None and age < BEAT_STALE_AFTER, "seconds_since_tick": age}


CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "workers": check_workers,
    "beat": check_beat,
}


def run_checks() -> dict[str, dict[str, Any]]:
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = _once_more_if_dropped(check)
        except Exception as exc:  # a health check reports every failure instead of raising
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return results


def _once_more_if_dropped(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The check, tried again when its connection was dropped: after a Redis restart the
    first use of each pooled connection fails ("Connection closed by server") and the pool
    then opens a new one, so the first /healthz of each web process answered a false 503.
    A server that is down refuses the second try as fast as the first."""
    try:
        return check()
    except (ConnectionError, redis.exceptions.ConnectionError, kombu.exceptions.OperationalError):
        return check()


_checking = threading.Lock()
_last: tuple[float, dict[str, dict[str, Any]]] | None = None  # (when it finished, results)
_running_since = 0.0  # when the run under way began
HUNG_AFTER = 10.0  # seconds: a run this long is reported, not waited for nor hidden
FRESH_FOR = 1.0  # seconds: an answer this recent is given again rather than checked anew


def checks_once_at_a_time() -> dict[str, dict[str, Any]]:
    """run_checks(), but one run per process at a time: a request that arrives while another
    runs them answers with the last result (before any, it waits for the running one), and
    once that run has taken HUNG_AFTER seconds, with a failing "checks" entry saying so:
    an old "ok" must not stand for a check that hangs (a database that does not answer).
    /healthz is open to anyone, and each run holds its thread for the worker ping's whole
    timeout (longer while Redis does not answer) and makes every worker answer: a crowd of
    requests, one run each, tied up every web thread. A request after a run has ended starts
    a fresh one, unless that run ended within FRESH_FOR."""
    global _last, _running_since
    last = _last
    if last is not None and time.monotonic() - last[0] < FRESH_FOR:
        # Else a thread whose run had just ended took the free lock for every next request
        # and ran the checks back to back, while the requests waiting for a first answer
        # could not get in (the test's crowd: 16 runs in a row).
        return last[1]
    if not _checking.acquire(blocking=False):
        last, running_for = _last, time.monotonic() - _running_since
        if last is not None and running_for < HUNG_AFTER:
            return last[1]
        if last is not None:
            stuck = f"a run of the checks has not finished in {running_for:.0f} s"
            return {**last[1], "checks": {"ok": False, "detail": stuck}}
        asked = time.monotonic()
        with _checking:
            last = _last
        if last is not None and last[0] >= asked:  # it finished while this request waited
            return last[1]
        _checking.acquire()
    try:
        _running_since = time.monotonic()
        checks = run_checks()
        _last = (time.monotonic(), checks)
        return checks
    finally:
        _checking.release()


def healthz(request: HttpRequest) -> JsonResponse:
    checks = checks_once_at_a_time()
    failing = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "fail" if failing else "ok", "failing": failing, "checks": checks}
    return JsonResponse(body, status=503 if failing else 200)
