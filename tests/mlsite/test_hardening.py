"""Hardening: the strict JSON parser, another user's finished job, deploy checks, Redis bind."""

import http.client
import io
import json
import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from django.core.cache import cache
from django.http import HttpRequest
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.test import APIClient
from rest_framework.views import APIView

from mlsite import broker
from mlsite.api import PASSWORD_ATTEMPTS_KEY, PasswordRateThrottle
from mlsite.parsers import StrictJSONParser
from predictions.models import PredictionJob, Status
from tests import processes
from tests.base import make_user
from tests.builders import iris_rows, make_version

ROOT = Path(__file__).resolve().parent.parent.parent


def parse(text: str | bytes) -> object:
    raw = text.encode() if isinstance(text, str) else text
    return StrictJSONParser().parse(io.BytesIO(raw), "application/json", {})


@pytest.fixture
def fresh_password_allowance() -> Iterator[None]:
    """No password checks counted yet: their log is in Redis, or in the cache while it is away."""

    def forget() -> None:
        cache.clear()
        stored = broker.client()
        for key in stored.scan_iter(PASSWORD_ATTEMPTS_KEY.format("*")):
            stored.delete(key)

    forget()
    yield
    forget()


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
        '{"\\udc00": 1}',  # a lone surrogate: no UTF-8 can carry it back out
        '{"rows": [{"\\ud800": 1.0}]}',
        '["a\\udfffb"]',
        '"\\ud83d"',
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
    assert parse('{"\\ud83d\\ude00": "\\u00e9\\\\ud800"}') == {"\U0001f600": "\u00e9\\ud800"}


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
        PROXY_COUNT="1",
        METRICS_TOKEN=secrets.token_urlsafe(20),
    )
    check = ["manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    done = processes.run_python(check, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
    # The same behind a TLS proxy it was not told of: every request would look like http.
    done = processes.run_python(check, {**env, "PROXY_COUNT": "0"})
    assert done.returncode != 0
    assert "mlsite.W001" in done.stderr + done.stdout
    # With monitoring open to anyone.
    done = processes.run_python(check, {**env, "METRICS_TOKEN": ""})
    assert done.returncode != 0
    assert "mlsite.W002" in done.stderr + done.stdout


def test_the_embedded_redis_listens_on_loopback_only(tmp_path: Path) -> None:
    with processes.redis_server(tmp_path / "redis") as server:
        config = redis.Redis(port=server.port).config_get("bind")
    assert config["bind"].split() == ["127.0.0.1"]
    assert "bash scripts/redis-server.sh" in (ROOT / "scripts/run.sh").read_text()  # make run's


def test_make_run_starts_redis_before_the_commands_that_change_cached_rows() -> None:
    """Else each row migrate, ensure_admin and seed_demo save warns that the caches of other
    processes could not be told (mlsite/freshcache.py): a dozen warnings on a first run."""
    lines = (ROOT / "scripts/run.sh").read_text().splitlines()

    def first(text: str) -> int:
        return next(number for number, line in enumerate(lines) if text in line)

    redis_started = first("  start_redis")
    assert "bash scripts/redis-server.sh" in lines[first("start_redis() {") + 1]
    for command in ("manage.py migrate", "manage.py ensure_admin", "manage.py seed_demo"):
        assert redis_started < first(command), command


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        '{"model": "iris", "input": {"sepal_length": 5.1}, "\\udc00": 1}',
        '{"model": "iris", "input": {"sepal_length": 5.1, "\\ud800": 1}}',
    ],
)
def test_a_lone_surrogate_in_a_body_is_a_400_in_json(body: str) -> None:
    make_version()
    client = APIClient()
    client.force_authenticate(make_user())
    answer = client.post("/api/v1/jobs/", body, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["code"] == "bad_json"
    assert PredictionJob.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nonexistent/",
        "/api/v1/models/iris/versions/abc/promote/",
        "/api/v1/models/bad%20name/versions/",
        "/api/nothing",
    ],
)
@pytest.mark.parametrize("debug", [False, True], ids=["production", "make-run"])
def test_an_unknown_address_under_the_api_is_a_json_404(path: str, debug: bool) -> None:
    client = APIClient()
    client.force_authenticate(make_user())
    with override_settings(DEBUG=debug):  # DEBUG shows Django's technical 404 page instead
        answer = client.get(path)
    assert answer.status_code == 404
    assert answer["Content-Type"] == "application/json"
    assert answer.json() == {"detail": "Not found.", "code": "not_found"}


@pytest.mark.django_db
def test_an_unknown_address_elsewhere_is_the_html_404(client) -> None:
    answer = client.get("/no-such-page/")
    assert answer.status_code == 404
    assert answer["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/jobs/", "/api/v1/auth/token/"])
def test_a_chunked_body_without_a_length_is_a_411_in_json(path: str) -> None:
    # How gunicorn passes a chunked request: the header, no CONTENT_LENGTH, a body Django's
    # WSGI request would read as empty.
    client = APIClient()
    client.force_authenticate(make_user())
    answer = client.generic("POST", path, HTTP_TRANSFER_ENCODING="chunked")
    assert answer.status_code == 411
    assert answer.json()["code"] == "length_required"
    assert PredictionJob.objects.count() == 0


def test_gunicorn_answers_a_chunked_body_411_and_an_unknown_api_address_404_in_json(
    live_web: str,
) -> None:
    host, port = live_web.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = iter([b'{"model": "iris", ', b'"input": {}}'])
        headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        conn.request("POST", "/api/v1/jobs/", body, headers, encode_chunked=True)
        chunked = conn.getresponse()
        assert (chunked.status, json.loads(chunked.read())["code"]) == (411, "length_required")
        conn.request("GET", "/api/v1/nonexistent/")
        missing = conn.getresponse()
        assert missing.status == 404
        assert json.loads(missing.read()) == {"detail": "Not found.", "code": "not_found"}
    finally:
        conn.close()


def test_an_error_outside_drf_answers_json_under_the_api_and_the_page_elsewhere() -> None:
    from django.test import RequestFactory

    from mlsite import api

    answer = api.server_error(RequestFactory().post("/api/v1/jobs/"))
    assert (answer.status_code, json.loads(answer.content)["code"]) == (500, "server_error")
    assert api.server_error(RequestFactory().get("/admin/"))["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "application/x-www-form-urlencoded"]
)
def test_too_many_form_fields_are_refused_saying_so(content_type: str) -> None:
    client = APIClient()
    client.force_authenticate(make_user())
    fields = {f"f{index}": "1" for index in range(20)}
    body, kind = (
        (urlencode(fields), content_type)
        if content_type.endswith("urlencoded")
        else (client._encode_data(fields, "multipart"))
    )
    with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10):
        answer = client.generic("POST", "/api/v1/jobs/", body, content_type=kind)
    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "The request has more than 10 form fields; send rows as JSON or as a file.",
        "code": "bad_request",
    }


@pytest.mark.django_db
def test_form_data_over_the_request_limit_is_a_413_in_json() -> None:
    # A multipart body under the file limit whose text fields Django refuses to hold.
    client = APIClient()
    client.force_authenticate(make_user())
    make_version()
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        answer = client.post("/api/v1/jobs/", {"model": "iris", "input": "x" * 2000})
    assert answer.status_code == 413
    assert answer.json()["code"] == "body_too_large"  # as when the jobs view's own check refuses it
    assert "over the 1,000-byte limit; send large inputs as a file" in answer.json()["detail"]
    assert PredictionJob.objects.count() == 0


DEEP = "[" * 1000 + "]" * 1000


def post_form(client: APIClient, path: str, fields: dict[str, str]) -> Any:
    """A url-encoded POST, as curl --data-urlencode sends it."""
    return client.post(path, urlencode(fields), content_type="application/x-www-form-urlencoded")


@pytest.mark.django_db
def test_deep_json_to_the_token_endpoint_is_a_400_for_anyone() -> None:
    body = '{"username": ' + DEEP + ', "password": "x"}'
    answer = APIClient().post("/api/v1/auth/token/", body, content_type="application/json")
    assert (answer.status_code, answer.json()["code"]) == (400, "bad_json")


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["input", "inputs"])
@pytest.mark.parametrize("value", [DEEP, "[" * 40 + "]" * 40], ids=["recursion", "over-depth"])
def test_deep_json_in_a_form_field_is_a_400_and_no_job(field: str, value: str) -> None:
    make_version()
    client = APIClient()
    client.force_authenticate(make_user())
    answer = post_form(client, "/api/v1/jobs/", {"model": "iris", field: value})
    assert (answer.status_code, answer.json()["code"]) == (400, "bad_json")
    assert PredictionJob.objects.count() == 0


@pytest.mark.django_db
def test_a_form_job_is_taken_like_a_json_one() -> None:
    make_version()
    client = APIClient()
    client.force_authenticate(make_user())
    answer = post_form(
        client, "/api/v1/jobs/", {"model": "iris", "input": json.dumps(iris_rows(1)[0])}
    )
    assert answer.status_code == 201, answer.json()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/jobs/{job}.json"),
        ("get", "/api/v1/jobs/{job}/result.csv"),
        ("post", "/api/v1/jobs.json"),
        ("post", "/api/v1/jobs/{job}/cancel.json"),
        ("get", "/api/v1/models/0.5/"),
        ("post", "/api/v1/training/specs/1/run.json"),
    ],
)
def test_a_format_suffix_is_an_unknown_address_not_a_500(method: str, path: str) -> None:
    user = make_user(staff=True)
    job = PredictionJob.objects.create(owner=user, version=make_version(), inputs=[], rows_total=0)
    client = APIClient()
    client.force_authenticate(user)
    answer = getattr(client, method)(path.format(job=job.pk))
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Not found.", "code": "not_found"}


@pytest.mark.django_db
def test_the_api_root_lists_every_collection() -> None:
    client = APIClient()
    client.force_authenticate(make_user())
    answer = client.get("/api/v1/")
    assert answer.status_code == 200
    assert sorted(answer.json()) == ["jobs", "models", "training/runs", "training/specs"]


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["?status=failed", "?model=wine", "?kind=batch"])
def test_list_filters_do_not_hide_a_job_at_its_own_address(query: str) -> None:
    user = make_user()
    job = PredictionJob.objects.create(
        owner=user, version=make_version(), inputs=[], rows_total=0, status=Status.SUCCEEDED
    )
    client = APIClient()
    client.force_authenticate(user)
    assert client.get(f"/api/v1/jobs/{job.pk}/{query}").status_code == 200
    assert client.get(f"/api/v1/jobs/{query}").json()["count"] == 0


@pytest.mark.django_db
@override_settings(LOGIN_THROTTLE_RATE="3/minute")
def test_guessing_passwords_at_the_token_endpoint_is_throttled(fresh_password_allowance) -> None:
    make_user("victim")
    client = APIClient()
    for guess in ("a", "b", "c"):
        answer = client.post("/api/v1/auth/token/", {"username": "victim", "password": guess})
        assert answer.status_code == 400
    right = client.post("/api/v1/auth/token/", {"username": "victim", "password": "pw-victim"})
    assert (right.status_code, right.json()["code"]) == (429, "throttled")
    assert int(right["Retry-After"]) > 0


@pytest.mark.django_db
@pytest.mark.parametrize("proxies", [0, 1])
def test_behind_a_proxy_each_client_has_its_own_token_allowance(
    settings, fresh_password_allowance, proxies: int
) -> None:
    # Every request comes from the proxy's address. Counted by it, one client's guesses
    # used up everyone's allowance; X-Forwarded-For is trusted only with PROXY_COUNT set
    # (with DRF's default, anyone could send a new one with each guess and never be counted).
    settings.LOGIN_THROTTLE_RATE = "2/minute"
    if proxies:  # what PROXY_COUNT=1 sets; 0 is the default
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}
    make_user("victim")
    client = APIClient(REMOTE_ADDR="10.0.0.1")

    def ask(client_address: str) -> int:
        body = {"username": "victim", "password": "wrong"}
        headers = {"HTTP_X_FORWARDED_FOR": client_address}
        return client.post("/api/v1/auth/token/", body, **headers).status_code

    guesser = [ask("203.0.113.7") for _ in range(2)]
    other = ask("198.51.100.2")
    guesser_disguised = ask("192.0.2.99")  # with no proxy, the guesser under another name
    assert guesser == [400, 400]
    if proxies:
        assert (other, guesser_disguised) == (400, 400)  # each address its own allowance
    else:
        assert (other, guesser_disguised) == (429, 429)  # the header is not believed


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["/admin/login/", "/api-auth/login/"])
def test_guessing_passwords_at_a_sign_in_page_is_throttled_with_the_token_endpoint(
    settings, fresh_password_allowance, page: str
) -> None:
    settings.LOGIN_THROTTLE_RATE = "3/minute"
    make_user("victim", staff=True)
    client = Client()
    # Guesses at the token endpoint and at the page share one allowance per address.
    assert APIClient().post("/api/v1/auth/token/", {"username": "victim"}).status_code == 400
    for guess in ("a", "b"):
        answer = client.post(page, {"username": "victim", "password": guess})
        assert answer.status_code == 200  # the form again, saying the password was wrong
    right = client.post(page, {"username": "victim", "password": "pw-victim"})
    assert right.status_code == 429
    assert "Too many sign-in attempts from this address" in right.content.decode()
    assert int(right["Retry-After"]) > 0
    assert client.get(page).status_code == 200  # the page itself is still shown


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/api/v1/jobs/", "/api/v1/models/iris/versions/"], ids=["jobs", "registry"]
)
def test_a_session_users_oversized_upload_is_refused_before_its_body_is_read(
    settings, monkeypatch, path: str
) -> None:
    # Session authentication's CSRF check reads request.POST: a form body was parsed whole
    # (onto disk) before the view's own check of its Content-Length could refuse it.
    from django.http import multipartparser

    settings.MAX_UPLOAD_BYTES = settings.MAX_ARTIFACT_BYTES = 1000
    parsed = []
    real_parse = multipartparser.MultiPartParser.parse
    monkeypatch.setattr(
        multipartparser.MultiPartParser,
        "parse",
        lambda self: parsed.append(1) or real_parse(self),
    )
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(make_user("staffer", staff=True))
    upload = io.BytesIO(b"x" * 200_000)
    upload.name = "big.csv"

    answer = client.post(path, {"model": "iris", "file": upload})

    assert (answer.status_code, answer.json()["code"]) == (413, "body_too_large")
    assert parsed == []


@pytest.mark.django_db
def test_an_ipv6_client_cannot_dodge_the_password_throttle_with_fresh_addresses(
    settings, fresh_password_allowance
) -> None:
    # A host is commonly given a whole /64: one address per guess was a fresh allowance each.
    settings.LOGIN_THROTTLE_RATE = "2/minute"
    make_user("victim")

    def ask(address: str) -> int:
        body = {"username": "victim", "password": "wrong"}
        return APIClient(REMOTE_ADDR=address).post("/api/v1/auth/token/", body).status_code

    same_host = [ask(f"2001:db8:1:2::{suffix}") for suffix in ("a", "b", "c")]
    other_network = ask("2001:db8:1:3::a")
    mapped = [ask(address) for address in ("::ffff:192.0.2.7", "192.0.2.7", "192.0.2.7")]
    assert (same_host, other_network) == ([400, 400, 429], 400)
    assert mapped == [400, 400, 429]  # an IPv4 client, however written


@pytest.mark.django_db
def test_every_web_process_counts_against_one_password_allowance(
    live_web: str, fresh_password_allowance
) -> None:
    # Each process counted in its own cache: a guesser had an allowance per web process
    # (gunicorn's workers, each host's), spread over them by the kernel or a load balancer.
    body = {"username": "nobody", "password": "guess"}
    here = [APIClient().post("/api/v1/auth/token/", body).status_code for _ in range(30)]
    host, port = live_web.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        conn.request("POST", "/api/v1/auth/token/", json.dumps(body), headers)
        web = conn.getresponse()
        assert set(here) == {400}  # the default allowance: 30 a minute
        assert web.status == 429
        assert int(web.headers["Retry-After"]) > 0
    finally:
        conn.close()


def test_password_checks_at_once_are_each_counted(settings, fresh_password_allowance) -> None:
    settings.LOGIN_THROTTLE_RATE = "5/minute"
    request = HttpRequest()
    request.META["REMOTE_ADDR"] = "198.51.100.9"
    start = threading.Barrier(20)

    def check(_: int) -> bool:
        start.wait()
        return PasswordRateThrottle().allow_request(Request(request), APIView())

    with ThreadPoolExecutor(20) as pool:
        allowed = list(pool.map(check, range(20)))
    assert allowed.count(True) == 5


@pytest.mark.django_db
def test_while_redis_is_away_each_process_still_counts_password_checks(
    fresh_password_allowance, settings
) -> None:
    settings.LOGIN_THROTTLE_RATE = "2/minute"
    settings.REDIS_URL = f"redis://127.0.0.1:{processes.free_port()}/0"  # nothing listens
    broker.client.cache_clear()
    try:
        body = {"username": "nobody", "password": "guess"}
        answers = [APIClient().post("/api/v1/auth/token/", body).status_code for _ in range(3)]
    finally:
        broker.client.cache_clear()
    assert answers == [400, 400, 429]


@pytest.mark.parametrize(
    ("forwarded", "counted"),
    [
        ("203.0.113.7:5678", "203.0.113.7"),
        ("[2001:db8:1:2::a]:443", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::a", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_the_password_throttle_counts_one_client_however_its_address_is_written(
    forwarded: str, counted: str
) -> None:
    # Some proxies write the client's port into X-Forwarded-For: each port was an allowance.
    from mlsite.api import _one_client

    assert _one_client(forwarded) == counted
