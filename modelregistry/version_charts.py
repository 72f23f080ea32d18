"""The metrics of all versions of a model side by side: a table and small inline SVG bar charts."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .models import ModelVersion, RegisteredModel

LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}
BAR_WIDTH, GAP, HEIGHT, LABEL = 22, 6, 90, 14
# Charted and tabled at most: metrics stored before MAX_METRICS existed (or above a raised
# one) must not turn every page of the model's versions into hundreds of megabytes.
MAX_SHOWN_METRICS = 50
COLOURS = {"production": "#2e7d32", "staging": "#1a6fb0", "archived": "#999", "none": "#79aec8"}


@dataclass
class Comparison:
    versions: list[ModelVersion]
    metrics: list[str]
    rows: list[tuple[ModelVersion, list[float | None]]]
    charts: list[tuple[str, SafeString]]
    highlight: int | None
    hidden: int  # metrics left out past MAX_SHOWN_METRICS


def compare(model: RegisteredModel, highlight: ModelVersion | None = None) -> Comparison:
    """Every version of the model (oldest first) with the numeric metrics any of them has:
    the first MAX_SHOWN_METRICS by name."""
    versions = list(model.versions.order_by("number"))
    every = sorted(
        {name for v in versions for name, value in v.metrics.items() if _is_number(value)}
    )
    metrics = every[:MAX_SHOWN_METRICS]
    rows = [(v, [_number(v.metrics.get(name)) for name in metrics]) for v in versions]
    charts = [(name, bar_chart(versions, name)) for name in metrics]
    highlighted = highlight.pk if highlight else None
    return Comparison(versions, metrics, rows, charts, highlighted, len(every) - len(metrics))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: object) -> float | None:
    return float(value) if _is_number(value) else None  # type: ignore[arg-type]


def bar_chart(versions: Sequence[ModelVersion], metric: str) -> SafeString:
    """One bar per version, coloured by stage, scaled from zero to the largest value."""
    values = [_number(v.metrics.get(metric)) for v in versions]
    present = [value for value in values if value is not None]
    low, high = min(0.0, *present), max(0.0, *present)
    span = (high - low) or 1.0
    zero = LABEL + (high / span) * HEIGHT
    width = len(versions) * (BAR_WIDTH + GAP) + GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT + 2 * LABEL}" '
        f'role="img" aria-label="{escape(metric)} by version">',
        f'<line x1="0" x2="{width}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#ccc"/>',
    ]
    for index, (version, value) in enumerate(zip(versions, values, strict=True)):
        x = GAP + index * (BAR_WIDTH + GAP)
        parts.append(_bar(version, metric, value, x, zero, span))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped


def _bar(
    version: ModelVersion, metric: str, value: float | None, x: float, zero: float, span: float
) -> str:
    label = (
        f'<text x="{x + BAR_WIDTH / 2:.1f}" y="{HEIGHT + 2 * LABEL - 2}" font-size="10" '
        f'text-anchor="middle">v{version.number}</text>'
    )
    if value is None:
        return label
    size = abs(value) / span * HEIGHT
    top = zero - size if value >= 0 else zero
    colour = COLOURS.get(version.stage, "#79aec8")
    title = escape(f"{version.ref} ({version.stage}): {metric} = {value:.4g}")
    return (
        f'<rect x="{x}" y="{top:.1f}" width="{BAR_WIDTH}" height="{max(size, 1):.1f}" '
        f'fill="{colour}"><title>{title}</title></rect>{label}'
    )
