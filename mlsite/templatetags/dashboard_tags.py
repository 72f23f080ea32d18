"""Template tags for the admin: why a queued job waits."""

from typing import Any

from django import template

from mlsite import dashboard

register = template.Library()


@register.simple_tag
def why_queued(job: Any) -> dict[str, Any]:
    return dashboard.why_queued(job)
