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


@register(Tags.security, deploy=True)
def monitoring_open(**kwargs: Any) -> list[CheckMessage]:
    """No METRICS_TOKEN: /metrics and /healthz's details are anyone's to read."""
    if settings.METRICS_TOKEN:
        return []
    return [
        Warning(
            "METRICS_TOKEN is not set",
            hint=(
                "Without it anyone may read /metrics and what /healthz's checks found (worker "
                "host names, errors naming hosts and ports); set it, and give Prometheus "
                "`Authorization: Bearer <token>`."
            ),
            id="mlsite.W002",
        )
    ]
