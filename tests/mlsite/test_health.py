"""/healthz in one process: what a crowd of requests costs."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import OperationalError
from django.test import Client, RequestFactory

from mlsite import health
from tests.base import make_user


@pytest.fixture(autouse=True)
def no_answer_yet(monkeypatch) -> None:
    """Each test starts as a new process would: no run of the checks yet."""
    monkeypatch.setattr(health, "_last", None)
    monkeypatch.setattr(health, "_running_since", 0.0)


def test_a_crowd_of_health_requests_runs_the_checks_once(monkeypatch) -> None:
    # The worker ping holds its thread for its whole timeout and makes every worker answer:
    # one run per request let anyone, signed in or not, tie up every web thread.
    runs = []
    lock = threading.Lock()

    def slow_check() -> dict:
        with lock:
            runs.append(time.monotonic())
        time.sleep(0.5)
        return {"ok": True}

    monkeypatch.setattr(health, "CHECKS", {"workers": slow_check})
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda _: health.healthz(RequestFactory().get("/healthz")), range(32))
        )
    assert [answer.status_code for answer in answers] == [200] * 32
    assert len(runs) <= 2
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("first_ok", [True, False])
def test_a_request_after_the_last_run_sees_a_fresh_answer(monkeypatch, first_ok: bool) -> None:
    states = iter([first_ok, not first_ok])
    monkeypatch.setattr(health, "CHECKS", {"broker": lambda: {"ok": next(states)}})
    first = health.healthz(RequestFactory().get("/healthz"))
    second = health.healthz(RequestFactory().get("/healthz"))
    assert (first.status_code == 200, second.status_code == 200) == (first_ok, not first_ok)


def test_requests_during_a_run_answer_at_once_and_a_hung_run_is_reported(monkeypatch) -> None:
    # Redis away: a run takes seconds. Those who came while it ran waited for it whenever
    # the last answer was over 5 s old, so a steady crowd still held every thread; and a run
    # that hangs must not leave an old "ok" standing for it.
    answers = iter([{"ok": True}, "slow"])

    def check() -> dict:
        answer = next(answers)
        if answer == "slow":
            time.sleep(2.0)
            return {"ok": False}
        return answer

    monkeypatch.setattr(health, "CHECKS", {"broker": check})
    monkeypatch.setattr(health, "HUNG_AFTER", 1.0)
    assert health.healthz(RequestFactory().get("/healthz")).status_code == 200
    monkeypatch.setattr(health, "_last", (time.monotonic() - 60, health._last[1]))  # long ago
    slow = threading.Thread(target=health.healthz, args=[RequestFactory().get("/healthz")])
    slow.start()
    time.sleep(0.3)  # the slow run has begun
    started = time.monotonic()
    during = health.healthz(RequestFactory().get("/healthz"))
    waited = time.monotonic() - started
    time.sleep(1.0)  # past HUNG_AFTER, the run still going
    hung = health.healthz(RequestFactory().get("/healthz"))
    slow.join()
    assert (during.status_code, waited < 1.0) == (200, True)
    assert hung.status_code == 503
    assert "a run of the checks has not finished in" in hung.content.decode()


@pytest.mark.django_db
def test_only_monitoring_sees_what_the_checks_found_once_a_token_is_set(
    monkeypatch, settings
) -> None:
    # The checks name worker hosts and quote errors with hosts and ports: anyone's to read.
    settings.METRICS_TOKEN = "s3cret"
    found = {"ok": False, "error": "ConnectionError: Error 111 connecting to 10.0.0.5:6379."}
    monkeypatch.setattr(health, "CHECKS", {"broker": lambda: found})
    staff = Client()
    staff.force_login(make_user("ops", staff=True))

    def body(client: Client, **headers: str) -> dict:
        answer = client.get("/healthz", **headers)
        assert answer.status_code == 503
        return json.loads(answer.content)

    assert body(Client()) == {"status": "fail", "failing": ["broker"]}
    assert body(Client(), HTTP_AUTHORIZATION="Bearer wrong") == body(Client())
    assert body(Client(), HTTP_AUTHORIZATION="Bearer s3cret")["checks"] == {"broker": found}
    assert body(staff)["checks"] == {"broker": found}
    settings.METRICS_TOKEN = ""  # as before: open, with check --deploy's warning
    assert body(Client())["checks"] == {"broker": found}


@pytest.mark.django_db
def test_a_staff_session_gets_the_json_answer_while_the_database_is_away(
    monkeypatch, settings
) -> None:
    # Whether the caller is staff is read through the session, from the database: with it
    # away, a browser signed in to the admin got a text 503 instead of what is failing.
    from django.contrib.sessions.backends.db import SessionStore

    settings.METRICS_TOKEN = "s3cret"
    monkeypatch.setattr(health, "CHECKS", {"database": lambda: {"ok": False}})
    staff = Client()
    staff.force_login(make_user("ops", staff=True))

    def away(self: SessionStore) -> None:
        raise OperationalError("the database system is starting up")

    monkeypatch.setattr(SessionStore, "_get_session_from_db", away)
    answer = staff.get("/healthz")
    assert answer.status_code == 503
    assert json.loads(answer.content) == {"status": "fail", "failing": ["database"]}


@pytest.mark.django_db
def test_the_database_check_fails_naming_migrations_the_database_lacks() -> None:
    # A release started before `manage.py migrate`: every job request answered 500 (a column
    # that does not exist) while /healthz said "ok".
    from django.db import connection
    from django.db.migrations.recorder import MigrationRecorder

    assert health.check_database() == {"ok": True, "vendor": connection.vendor}
    MigrationRecorder(connection).record_unapplied("predictions", "0007_job_text_predictions")
    assert health.check_database() == {
        "ok": False,
        "vendor": connection.vendor,
        "unapplied_migrations": ["predictions.0007_job_text_predictions"],
    }
