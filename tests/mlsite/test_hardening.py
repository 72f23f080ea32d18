"""Hardening: the strict JSON parser, another user's finished job, deploy checks, Redis bind."""

import io
import os
import secrets
from pathlib import Path

import pytest
import redis
from django.utils import timezone
from rest_framework.exceptions import ParseError
from rest_framework.test import APIClient

from mlsite.parsers import StrictJSONParser
from predictions.models import PredictionJob, Status
from tests import processes
from tests.base import make_user
from tests.builders import iris_rows, make_version

ROOT = Path(__file__).resolve().parent.parent.parent


def parse(text: str | bytes) -> object:
    raw = text.encode() if isinstance(text, str) else text
    return StrictJSONParser().parse(io.BytesIO(raw), "application/json", {})


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[-Infinity]",
        '{"x": Infinity}',
        "1e999",
        "-1e400",
        "1" + "0" * 400,  # an integer no float can hold
        "9" * 5000,  # more digits than Python converts
        "[" * 50 + "]" * 50,
        "[" * 100_000 + "]" * 100_000,  # DRF's own parser: RecursionError, a 500
        '{"a": ' * 40 + "1" + "}" * 40,
        b'{"x": "\xff"}',
    ],
)
def test_the_parser_refuses_what_json_cannot_mean_as_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)


def test_the_parser_keeps_ordinary_json_and_brackets_inside_strings() -> None:
    assert parse('{"rows": [{"a": 1.5, "b": -2, "c": 1e300}], "note": "[[[[{{{{"}') == {
        "rows": [{"a": 1.5, "b": -2, "c": 1e300}],
        "note": "[[[[{{{{",
    }
    assert parse("[" * 32 + "]" * 32) is not None  # MAX_JSON_DEPTH deep is allowed


@pytest.mark.django_db
def test_another_users_finished_job_and_its_files_are_404_and_never_listed() -> None:
    make_version()
    owner, stranger = make_user("owner"), APIClient()
    stranger.force_authenticate(make_user("stranger"))
    job = PredictionJob.objects.create(
        owner=owner,
        version=make_version(),
        model_ref="iris",
        inputs=iris_rows(1),
        outputs=[{"prediction": 0}],
        status=Status.SUCCEEDED,
        finished_at=timezone.now(),
    )
    for path in ("", "result/", "result/?format=csv", "result/?format=parquet", "errors/"):
        answer = stranger.get(f"/api/v1/jobs/{job.pk}/{path}")
        assert answer.status_code == 404, path
        assert answer.json()["code"] == "not_found"
    for path in ("cancel/", "retry/"):
        assert stranger.post(f"/api/v1/jobs/{job.pk}/{path}").status_code == 404
    for query in ("", "?status=succeeded", "?model=iris", "?owner=owner", f"?id={job.pk}"):
        assert stranger.get(f"/api/v1/jobs/{query}").json()["count"] == 0, query


@pytest.mark.django_db
def test_a_signed_in_user_who_is_not_staff_never_reaches_the_admin(client) -> None:
    make_user("someone")
    client.login(username="someone", password="pw-someone")
    for path in ("/admin/", "/admin/predictions/predictionjob/", "/admin/modelregistry/"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/admin/login/" in answer["Location"], path


def test_check_deploy_is_clean_with_production_settings() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        # DJANGO_ALLOW_ASYNC_UNSAFE is set by the browser tests' conftest for Playwright.
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"))
    }
    env.update(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="ml.example.com",
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
    )
    done = processes.run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_the_embedded_redis_listens_on_loopback_only(tmp_path: Path) -> None:
    with processes.redis_server(tmp_path / "redis") as server:
        config = redis.Redis(port=server.port).config_get("bind")
    assert config["bind"].split() == ["127.0.0.1"]
    procfile = (ROOT / "Procfile").read_text()
    assert "redis: bash scripts/redis-server.sh" in procfile  # how `make run` starts Redis
