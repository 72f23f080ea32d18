"""The admin's Tokens page: staff see and make only their own API token."""

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.base import make_user, with_permissions

pytestmark = pytest.mark.django_db
TOKENS = "/admin/authtoken/tokenproxy/"


@pytest.fixture
def token_keeper() -> Client:
    """Staff who may view and add tokens, as one who fetches their own from this page."""
    user = make_user("keeper", staff=True)
    with_permissions(user, "view_tokenproxy", "add_tokenproxy")
    client = Client()
    client.force_login(user)
    return client


def test_staff_see_their_own_token_and_not_a_superusers(token_keeper) -> None:
    boss = make_user("boss", staff=True, is_superuser=True)
    theirs = Token.objects.create(user=boss)
    another = Token.objects.create(user=make_user("someone"))
    mine = Token.objects.create(user=token_keeper.get(TOKENS).wsgi_request.user)

    page = token_keeper.get(TOKENS).content.decode()

    # A key listed is a login: with the boss's, staff acted as a superuser over the API.
    assert mine.key in page
    assert theirs.key not in page and another.key not in page
    assert token_keeper.get(f"{TOKENS}{boss.pk}/change/").status_code == 302  # not found


def test_staff_make_a_token_only_for_themselves(token_keeper) -> None:
    boss = make_user("boss", staff=True, is_superuser=True)

    answer = token_keeper.post(f"{TOKENS}add/", {"user": boss.pk})

    assert answer.status_code == 200  # the form again: not a choice
    assert not Token.objects.filter(user=boss).exists()
    keeper = answer.wsgi_request.user
    assert token_keeper.post(f"{TOKENS}add/", {"user": keeper.pk}).status_code == 302
    assert Token.objects.filter(user=keeper).exists()
