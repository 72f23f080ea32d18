"""Cached model references and tokens: another process sees a change as soon as it hears of it.

The change is published after commit; the web process hears it on its listener thread a moment
later, so each check allows a second (the cache would otherwise keep its entries 30 s).
"""

import http.client
import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.authtoken.models import Token

from modelregistry import versions
from modelregistry.models import Stage
from tests.base import make_user
from tests.builders import iris_rows, make_version

pytestmark = pytest.mark.django_db(transaction=True)


def soon(condition: Callable[[], bool], seconds: float = 1.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def call(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    """POST `body` (GET without one) with the token; the HTTP status and the JSON answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    try:
        if body is None:
            conn.request("GET", parts.path, headers=headers)
        else:
            conn.request("POST", parts.path, json.dumps(body), headers)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_a_promotion_is_used_at_once_by_submissions_in_another_process(live_web) -> None:
    make_version()
    token = Token.objects.create(user=make_user("cache-user")).key
    submit = {"model": "iris", "input": iris_rows(1)[0]}
    assert call(f"{live_web}/api/v1/jobs/", token, submit)[1]["version"] == "iris:1"
    assert call(f"{live_web}/api/v1/jobs/", token, submit)[1]["version"] == "iris:1"  # cached

    versions.promote(make_version(stage=Stage.STAGING), Stage.PRODUCTION)

    assert soon(lambda: call(f"{live_web}/api/v1/jobs/", token, submit)[1]["version"] == "iris:2")


def test_a_deleted_token_is_refused_at_once_in_another_process(
    live_web,
) -> None:
    token = Token.objects.create(user=make_user("cache-user-2"))
    key = token.key  # delete() clears it: the key is the primary key
    assert call(f"{live_web}/api/v1/jobs/", key)[0] == 200
    assert call(f"{live_web}/api/v1/jobs/", key)[0] == 200  # cached

    token.delete()

    assert soon(lambda: call(f"{live_web}/api/v1/jobs/", key)[0] == 401)
    assert call(f"{live_web}/api/v1/jobs/", key)[1]["code"] == "authentication_failed"


def test_a_deactivated_user_is_refused_at_once_in_another_process(
    live_web,
) -> None:
    user = make_user("cache-user-3")
    token = Token.objects.create(user=user).key
    assert call(f"{live_web}/api/v1/jobs/", token)[0] == 200

    user.is_active = False
    user.save()

    assert soon(lambda: call(f"{live_web}/api/v1/jobs/", token)[0] == 401)


def test_a_permission_taken_from_a_users_group_is_refused_at_once_in_another_process(
    live_web,
) -> None:
    make_version()
    group = Group.objects.create(name="promoters")
    group.permissions.set(Permission.objects.filter(codename="change_modelversion"))
    user = make_user("cache-user-4", staff=True)
    user.groups.add(group)
    token = Token.objects.create(user=user).key
    rollback = f"{live_web}/api/v1/models/iris/rollback/"
    # Allowed: there is just nothing to roll back to (409), twice, so the user is cached.
    assert call(rollback, token, {})[1]["code"] == "stage_conflict"
    assert call(rollback, token, {})[1]["code"] == "stage_conflict"

    group.permissions.clear()  # neither the user nor the token is saved

    assert soon(lambda: call(rollback, token, {})[0] == 403)


def test_a_user_taken_out_of_a_group_loses_its_permissions_at_once_in_another_process(
    live_web,
) -> None:
    make_version()
    group = Group.objects.create(name="promoters-2")
    group.permissions.set(Permission.objects.filter(codename="change_modelversion"))
    user = make_user("cache-user-5", staff=True)
    user.groups.add(group)
    token = Token.objects.create(user=user).key
    rollback = f"{live_web}/api/v1/models/iris/rollback/"
    assert call(rollback, token, {})[1]["code"] == "stage_conflict"

    group.user_set.remove(user)  # from the group's side: no signal for the user's row

    assert soon(lambda: call(rollback, token, {})[0] == 403)
