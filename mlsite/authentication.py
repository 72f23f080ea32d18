"""API authentication: DRF's tokens, with each token's user cached per process.

Kept apart from mlsite/api.py: DRF imports authentication classes while it loads its views.
"""

from functools import partial

from django.contrib.auth.models import User
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from .freshcache import FreshCache

_tokens: FreshCache[tuple[User, Token]] = FreshCache()


class CachedTokenAuthentication(TokenAuthentication):
    """A deleted token or a changed user is forgotten everywhere at once (mlsite/freshcache.py);
    an unknown token is never cached, so the database refuses it every time."""

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        return _tokens.get(key, partial(super().authenticate_credentials, key))
