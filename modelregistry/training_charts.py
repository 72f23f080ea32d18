"""A small inline SVG chart of a spec's primary metric over its runs (no JavaScript)."""

from collections.abc import Sequence

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from .models import TrainingRun

WIDTH, HEIGHT, PAD = 480, 160, 28


def metric_chart(runs: Sequence[TrainingRun], metric: str) -> SafeString:
    """New version (solid, a filled dot when promoted) and production (dashed) per run."""
    points = [
        (run, run.metrics.get(metric), run.production_metrics.get(metric))
        for run in runs
        if isinstance(run.metrics.get(metric), int | float)
    ]
    if not points:
        return format_html("<p>No finished run has a score for {} yet.</p>", metric)
    values = [v for _, new, old in points for v in (new, old) if isinstance(v, int | float)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0

    def x(index: int) -> float:
        return PAD + index * (WIDTH - 2 * PAD) / max(len(points) - 1, 1)

    def y(value: float) -> float:
        return HEIGHT - PAD - (value - low) * (HEIGHT - 2 * PAD) / span

    new_line = " ".join(f"{x(i):.1f},{y(new):.1f}" for i, (_, new, _) in enumerate(points))
    old_line = " ".join(
        f"{x(i):.1f},{y(old):.1f}"
        for i, (_, _, old) in enumerate(points)
        if isinstance(old, int | float)
    )
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(new):.1f}" r="4" stroke="#417690" '
        f'fill="{"#417690" if run.promoted else "#fff"}">'
        f"<title>run {run.pk}: {new:.4f}{' (promoted)' if run.promoted else ''}</title></circle>"
        for i, (run, new, _) in enumerate(points)
    )
    label = escape(metric)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{label} over the last {len(points)} runs" '
        f'style="font:11px sans-serif;background:#fafafa;border:1px solid #ddd">'
        f'<text x="{PAD}" y="14">{label}: new version (solid, filled = promoted), '
        f"production (dashed)</text>"
        f'<text x="2" y="{y(high) + 4:.1f}">{high:.3g}</text>'
        f'<text x="2" y="{y(low) + 4:.1f}">{low:.3g}</text>'
        f'<polyline points="{old_line}" fill="none" stroke="#999" stroke-dasharray="4 3"/>'
        f'<polyline points="{new_line}" fill="none" stroke="#417690" stroke-width="2"/>'
        f"{dots}</svg>"
    )
    return mark_safe(svg)  # noqa: S308 - built only from numbers and the escaped metric name
