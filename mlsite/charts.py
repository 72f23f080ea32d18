"""A small inline-SVG chart for the dashboard: jobs finished per minute and mean latency."""

from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 720, 200, 44, 24, 12, 56


def throughput_chart(minutes: list[dict[str, Any]]) -> SafeString:
    """Bars: jobs finished each minute (left axis). Line: their mean latency (right axis)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    most = max([m["finished"] for m in minutes] + [1])
    slowest = max([m["latency"] or 0 for m in minutes] + [0.001])
    step = plot_w / max(len(minutes), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="Jobs finished per minute and mean latency, '
        f'last hour" class="throughput-chart">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        f'stroke="#999"/>',
        _text(LEFT - 6, TOP + 8, str(most), "end"),
        _text(LEFT - 6, TOP + plot_h, "0", "end"),
        _text(LEFT + plot_w + 6, TOP + 8, f"{slowest:.2g} s", "start", "#c62828"),
        _text(LEFT, HEIGHT - 6, "60 min ago", "start"),
        _text(LEFT + plot_w, HEIGHT - 6, "now", "end"),
    ]
    points = []
    for index, minute in enumerate(minutes):
        x = LEFT + index * step
        height = plot_h * minute["finished"] / most
        if minute["finished"]:
            label = f"{minute['minute']:%H:%M}: {minute['finished']} finished"
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{TOP + plot_h - height:.1f}" width="{step - 2:.1f}" '
                f'height="{height:.1f}" fill="#79aec8"><title>{escape(label)}</title></rect>'
            )
        if minute["latency"] is not None:
            y = TOP + plot_h - plot_h * minute["latency"] / slowest
            points.append(f"{x + step / 2:.1f},{y:.1f}")
    if points:
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="#c62828" stroke-width="2"/>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped labels only


def _text(x: float, y: float, text: str, anchor: str, colour: str = "#666") -> str:
    return (
        f'<text x="{x}" y="{y}" font-size="11" text-anchor="{anchor}" fill="{colour}">'
        f"{escape(text)}</text>"
    )
