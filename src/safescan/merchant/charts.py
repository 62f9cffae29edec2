"""Bar charts for the back office's settlement page: inline SVG made on the server (no script,
no style attribute: the page's strict Content-Security-Policy holds), each with a title, a text
description and the same figures as a table for screen readers and printing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from safescan.code.display import html_text

WIDTH, HEIGHT = 640, 240
LEFT, BOTTOM, TOP = 8, 28, 22


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[int],
    fmt: Callable[[int], str],
    *,
    column: str = "",
    colour: str = "#1f6feb",
    every: int = 1,
) -> str:
    """An SVG bar chart (``every``: label every n-th bar) followed by its data table."""
    e = html_text
    n = max(1, len(values))
    top = max([*values, 1])
    slot = (WIDTH - 2 * LEFT) / n
    bar = max(2.0, slot * 0.72)
    plot = HEIGHT - BOTTOM - TOP
    parts = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot * value / top
        x = LEFT + i * slot + (slot - bar) / 2
        y = TOP + plot - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
            f"<title>{e(label)}: {e(fmt(value))}</title></rect>"
        )
        if value and n <= 12:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{max(TOP - 4, y - 4):.1f}" font-size="12"'
                f' text-anchor="middle" fill="#1d2430">{e(fmt(value))}</text>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 10}" font-size="12"'
                f' text-anchor="middle" fill="#4d5561">{e(label)}</text>'
            )
    total = sum(values)
    desc = f"{title}: total {fmt(total)}; highest {fmt(top if any(values) else 0)}."
    rows = "".join(
        f"<tr><td>{e(label)}</td><td class=num>{e(fmt(v))}</td></tr>"
        for label, v in zip(labels, values, strict=True)
        if v
    )
    return f"""
<figure class="chart" id="{e(chart_id)}">
  <figcaption>{e(title)}</figcaption>
  <svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{e(chart_id)}-t {e(chart_id)}-d"
       preserveAspectRatio="xMidYMid meet" class="chart-svg">
    <title id="{e(chart_id)}-t">{e(title)}</title><desc id="{e(chart_id)}-d">{e(desc)}</desc>
    <line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - LEFT}" y2="{HEIGHT - BOTTOM}"
          stroke="#6b7380" stroke-width="1"/>
    {"".join(parts)}
  </svg>
  <details><summary>The figures</summary>
    <table class="summary"><thead><tr><th>{e(column)}</th><th class=num>Amount</th></tr></thead>
    <tbody>{rows or '<tr><td colspan="2">None</td></tr>'}</tbody></table>
  </details>
</figure>
"""
