"""/healthz: is each part of the stack answering? 200 when all are, 503 naming the rest."""

import threading
import time
from collections.abc import Callable
from typing import Any

import kombu.exceptions
import redis.exceptions
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

from . import broker
from .celery import app as celery_app
from .metrics import has_monitoring_token
from .scheduler import HEARTBEAT_KEY

BEAT_STALE_AFTER = 30  # seconds; beat ticks at least every 5 s


def check_database() -> dict[str, Any]:
    """The database answers and has every migration of this release: one started before
    `manage.py migrate` answered 500 wherever a new column is read, under an "ok" here."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    result: dict[str, Any] = {"ok": True, "vendor": connection.vendor}
    executor = MigrationExecutor(connection)  # about 5 ms once its modules are imported
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        result["ok"] = False
        result["unapplied_migrations"] = [f"{m.app_label}.{m.name}" for m, _ in plan]
    return result


def check_broker() -> dict[str, Any]:
    broker.client().ping()
    return {"ok": True}


def check_workers() -> dict[str, Any]:
    """Some worker answers, and every queue has one: with the predict worker dead and the
    batch worker alive, a ping any worker answered said "ok" while single jobs waited."""
    replies = celery_app.control.inspect(timeout=1.0).active_queues() or {}
    consumed = {queue["name"] for queues in replies.values() for queue in queues}
    missing = [queue.name for queue in settings.CELERY_TASK_QUEUES if queue.name not in consumed]
    result: dict[str, Any] = {"ok": bool(replies) and not missing, "workers": sorted(replies)}
    if replies and missing:
        result["queues_without_workers"] = missing
    return result


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
_finished = threading.Condition()  # notified as each run ends
_last: tuple[float, dict[str, dict[str, Any]]] | None = None  # (when it finished, results)
_running_since = 0.0  # when the run under way began
HUNG_AFTER = 10.0  # seconds: a run this long is reported, not waited for nor hidden


def checks_once_at_a_time() -> dict[str, dict[str, Any]]:
    """run_checks(), but one run per process at a time: a request that arrives while another
    runs them answers with the last result (before any, it waits for the running one), and
    once that run has taken HUNG_AFTER seconds, with a failing "checks" entry saying so:
    an old "ok" must not stand for a check that hangs (a database that does not answer).
    /healthz is open to anyone, and each run holds its thread for the worker ping's whole
    timeout (longer while Redis does not answer) and makes every worker answer: a crowd of
    requests, one run each, tied up every web thread. A request after a run has ended starts
    a fresh one. Those waiting for a first answer wait for a run to end, not for the lock: a
    thread whose run had just ended took the free lock again for each next request, and they
    could not get in (CI: 16 runs in a row)."""
    global _last, _running_since
    asked = time.monotonic()
    if not _checking.acquire(blocking=False):
        last, running_for = _last, time.monotonic() - _running_since
        if last is not None and running_for < HUNG_AFTER:
            return last[1]
        if last is not None:
            stuck = f"a run of the checks has not finished in {running_for:.0f} s"
            return {**last[1], "checks": {"ok": False, "detail": stuck}}
        with _finished:
            if _finished.wait_for(lambda: _ended_since(asked), timeout=HUNG_AFTER):
                return _last[1]  # type: ignore[index]  # _ended_since saw it set
        stuck = f"the first run of the checks has not finished in {HUNG_AFTER:.0f} s"
        return {"checks": {"ok": False, "detail": stuck}}
    try:
        _running_since = time.monotonic()
        checks = run_checks()
        _last = (time.monotonic(), checks)
        return checks
    finally:
        _checking.release()
        with _finished:
            _finished.notify_all()


def _ended_since(asked: float) -> bool:
    return _last is not None and _last[0] >= asked


def healthz(request: HttpRequest) -> JsonResponse:
    """The verdict and the failing parts for anyone (a load balancer's probe); what each check
    found (worker host names, error messages naming hosts and ports) only for the bearer of
    METRICS_TOKEN and signed-in staff, once METRICS_TOKEN is set."""
    checks = checks_once_at_a_time()
    failing = [name for name, result in checks.items() if not result["ok"]]
    body: dict[str, Any] = {"status": "fail" if failing else "ok", "failing": failing}
    if has_monitoring_token(request) or _is_staff(request):
        body["checks"] = checks
    return JsonResponse(body, status=503 if failing else 200)


def _is_staff(request: HttpRequest) -> bool:
    """A signed-in staff member's request; False while the database (sessions, users) is away,
    which must not cost the answer its JSON."""
    user = getattr(request, "user", None)
    try:
        return user is not None and user.is_staff
    except DatabaseError:
        return False
