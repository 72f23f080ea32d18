"""System checks of our own settings, shown by `manage.py check --deploy`."""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def proxy_headers_believed(**kwargs: Any) -> list[CheckMessage]:
    """HTTPS settings on with PROXY_COUNT 0: behind a TLS proxy, web sees plain http (its
    X-Forwarded-Proto is not believed) and every sign-in shares the proxy's address."""
    if settings.PROXY_COUNT or not settings.SECURE_SSL_REDIRECT:
        return []
    return [
        Warning(
            "SECURE_SSL_REDIRECT is on but PROXY_COUNT is 0",
            hint=(
                "Behind a TLS proxy, set PROXY_COUNT=1: without it every request looks like "
                "plain http (each is redirected again) and throttles count the proxy's address "
                "for every client."
            ),
            id="mlsite.W001",
        )
    ]
