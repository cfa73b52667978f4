"""Charts as SVG, drawn on the server: no script, no request to anyone, nothing the
admin's Content-Security-Policy forbids.

We tried pygal first: every chart it draws carries an inline ``<script>`` (its tooltip
configuration) that the admin's CSP (``script-src 'self'``) blocks and reports, and random
element ids that change on every render. These three shapes are all the views need.

Colours are CSS classes (``series-1``…, ``axis``, ``label``) that the admin's stylesheet
fills from its own variables, so a chart follows the page into dark mode; text is
``currentColor``. The SVG scales to the width it is given (``viewBox``), and labels sit
above their bars so that a phone's 375 px leave the bars room. A chart is a picture of
the table beside it (``mailer.insight.tables``): it is ``aria-hidden`` there and has a
title for those who hover.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

WIDTH = 400
FONT = 13
ROW = 38  # a horizontal bar's row: its label, then the bar
BAR = 14


def _svg(height: float, title: str, body: list[str]) -> Markup:
    # Every piece of text in ``body`` was escaped where it was written.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {WIDTH} {math.ceil(height)}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-hidden="true" '
        f'font-size="{FONT}"><title>{escape(title)}</title>{"".join(body)}</svg>')


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _cut(text: str, length: int = 58) -> str:
    return text if len(text) <= length else text[:length - 1] + "…"


def bars(title: str, labels: list[str], series: list[list[float]],
         names: list[str] | None = None) -> Markup:
    """Horizontal bars, one row per label; several series are stacked in each row."""
    if not labels:
        return _empty(title)
    totals = [sum(values[i] for values in series) for i in range(len(labels))]
    most = max(totals) or 1
    room = WIDTH - 70  # the value is written after the bar
    body: list[str] = []
    y = 4.0
    for i, label in enumerate(labels):
        body.append(f'<text class="label" x="0" y="{y + FONT:.0f}">{escape(_cut(label))}</text>')
        x = 0.0
        for s, values in enumerate(series, start=1):
            width = room * values[i] / most
            if width > 0:
                body.append(f'<rect class="series-{s}" x="{x:.1f}" y="{y + FONT + 5:.0f}" '
                            f'width="{max(width, 1.5):.1f}" height="{BAR}" rx="2"/>')
            x += width
        body.append(f'<text class="value" x="{x + 6:.1f}" y="{y + FONT + 5 + BAR - 2:.0f}">'
                    f'{_number(totals[i])}</text>')
        y += ROW
    if names and len(series) > 1:
        y = _legend(body, names, y + 4)
    return _svg(y + 4, title, body)


def lines(title: str, labels: list[str], series: list[list[float]], names: list[str]) -> Markup:
    """Lines over time: ``labels`` along the bottom (the first, middle and last written)."""
    if not labels:
        return _empty(title)
    left, top, height = 44, 10, 170
    right = WIDTH - 8
    most = max((v for values in series for v in values), default=0)
    step = _nice_step(most)
    ceiling = step * max(1, math.ceil(most / step)) if most else 1
    body: list[str] = []
    for k in range(0, int(round(ceiling / step)) + 1):
        value = k * step
        y = top + height - height * value / ceiling
        body.append(f'<line class="gridline" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" '
                    f'text-anchor="end">{_number(value)}</text>')
    n = len(labels)

    def x_of(i: int) -> float:
        return left + (right - left) * (i / (n - 1) if n > 1 else 0.5)

    for s, values in enumerate(series, start=1):
        points = " ".join(f"{x_of(i):.1f},{top + height - height * v / ceiling:.1f}"
                          for i, v in enumerate(values))
        body.append(f'<polyline class="line series-{s}" points="{points}"/>')
        if n == 1:
            body.append(f'<circle class="series-{s}" cx="{x_of(0):.1f}" '
                        f'cy="{top + height - height * values[0] / ceiling:.1f}" r="3"/>')
    base = top + height + FONT + 6
    for i in sorted({0, n // 2, n - 1}):
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        body.append(f'<text class="tick" x="{x_of(i):.1f}" y="{base}" '
                    f'text-anchor="{anchor}">{escape(labels[i])}</text>')
    y = base + 8
    if len(series) > 1:
        y = _legend(body, names, y)
    return _svg(y + 4, title, body)


def _legend(body: list[str], names: list[str], y: float) -> float:
    x = 0.0
    for s, name in enumerate(names, start=1):
        width = 18 + 7.5 * len(name)
        if x and x + width > WIDTH:
            x, y = 0.0, y + FONT + 8
        body.append(f'<rect class="series-{s}" x="{x:.0f}" y="{y:.0f}" width="12" '
                    f'height="12" rx="2"/>')
        body.append(f'<text class="label" x="{x + 16:.0f}" y="{y + 11:.0f}">'
                    f'{escape(name)}</text>')
        x += width + 10
    return y + FONT + 6


def _nice_step(most: float) -> float:
    """A round step for about four grid lines: 1, 2 or 5 times a power of ten."""
    if most <= 0:
        return 1
    rough = most / 4
    power = 10 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if rough <= factor * power:
            return max(1, factor * power)
    return max(1, 10 * power)


def _empty(title: str) -> Markup:
    return _svg(30, title, [f'<text class="label" x="0" y="{FONT + 4}">Nothing to show '
                            'yet.</text>'])
