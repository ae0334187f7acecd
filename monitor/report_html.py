"""The HTML report: one self-contained page (inline CSS, charts as inline SVG, no script, no network).

Post text, author names, rule names and descriptions are written by strangers: every piece of data
goes through `html.escape` (attributes with quote=True), only http(s) URLs become links, and a
Content-Security-Policy forbids scripts and any fetch should something slip through anyway.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from monitor.confbase import SEVERITIES
from monitor.report import explain, visible_text

EXCERPT = 280
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

SENTIMENT_SERIES = (
    ("negative", "Negative", "#c8413b"),
    ("neutral", "Neutral", "#9aa0a6"),
    ("positive", "Positive", "#2e8b57"),
)
FLAG_SERIES = (("flags", "Flags", "#d9822b"),)
AGING_SERIES = (("cases", "Open cases", "#3f6fb5"),)

STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1200px; padding: 24px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.meta, .muted { color: #59636e; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { color: #59636e; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.grid { display: flex; flex-wrap: wrap; gap: 24px; }
.grid > section { flex: 1 1 320px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid #eaeef2; }
th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.posts td.post { max-width: 420px; overflow-wrap: anywhere; }
.posts td.why { max-width: 300px; overflow-wrap: anywhere; }
.sev { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600;
       background: #eaeef2; }
.sev-critical { background: #8b1a1a; color: #fff; }
.sev-high { background: #d1453b; color: #fff; }
.sev-medium { background: #f0b43c; color: #1f2328; }
.sev-low { background: #d6e4f5; color: #1f2328; }
.charts > section { max-width: 820px; margin-bottom: 18px; }
.chart { margin: 0; }
.chart svg { width: 100%; height: auto; display: block; }
.chart svg text { font: 12px system-ui, sans-serif; fill: #59636e; }
.legend { display: flex; gap: 14px; font-size: 12px; color: #59636e; margin: 4px 0 0; padding: 0;
          list-style: none; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
.nodata { color: #59636e; font-style: italic; border: 1px dashed #d0d7de; border-radius: 6px;
          padding: 18px; text-align: center; }
details { margin-top: 12px; }
"""


def _e(value: Any) -> str:
    """Escape any value for HTML text or a double-quoted attribute, escape sequences and bidi overrides dropped."""
    return html.escape("" if value is None else visible_text(str(value)), quote=True)


def safe_url(url: Any) -> str | None:
    """The URL when it is an absolute http(s) URL with a host; None for anything else."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if any(ord(ch) < 0x20 or ch.isspace() for ch in url):
        return None
    return url


def _hours(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} h"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _nice_max(value: float) -> int:
    """A round axis maximum at or above value (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(
    title: str,
    description: str,
    labels: Sequence[str],
    values: Sequence[dict[str, int]],
    series: Sequence[tuple[str, str, str]],
    *,
    tick_every: int | None = None,
) -> str:
    """An inline SVG bar chart; several series stack. No data: a note instead of a chart."""
    if not labels or not any(sum(v.get(key, 0) for key, _, _ in series) for v in values):
        return f'<p class="nodata">{_e(title)}: no data for this period.</p>'
    width, height, left, right, top, bottom = 760, 240, 44, 12, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max(sum(v.get(key, 0) for key, _, _ in series) for v in values))
    slot = plot_w / len(labels)
    bar = max(slot * 0.8, 0.5)
    every = tick_every or max(1, round(len(labels) / 8))
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(description)}"'
        f' preserveAspectRatio="xMidYMid meet">',
        f"<title>{_e(title)}</title>",
        f"<desc>{_e(description)}</desc>",
    ]
    for fraction in (0, 0.5, 1):  # grid lines and y labels
        y = top + plot_h * (1 - fraction)
        tick = top_value * fraction
        shown = f"{tick:g}" if tick != int(tick) else str(int(tick))
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"'
            f' stroke-width="1"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(shown)}</text>')
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = left + index * slot + (slot - bar) / 2
        base: float = top + plot_h
        for key, name, color in series:
            count = value.get(key, 0)
            if count <= 0:
                continue
            h = plot_h * count / top_value
            base -= h
            parts.append(
                f'<rect x="{x:.2f}" y="{base:.2f}" width="{bar:.2f}" height="{h:.2f}" fill="{_e(color)}">'
                f"<title>{_e(label)}: {_e(count)} {_e(name.lower())}</title></rect>"
            )
        last = len(labels) - 1
        if index % every == 0 or (index == last and last % every >= every / 2):
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                f"{_e(label)}</text>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{_e(color)}"></span>{_e(name)}</li>'
        for _, name, color in series
    )
    return f'<figure class="chart">{"".join(parts)}<ul class="legend">{legend}</ul></figure>'


def _short_day(day: str) -> str:
    return day[5:] if len(day) == 10 else day


def _charts(summary: dict[str, Any]) -> str:
    per_day = summary.get("mentions_per_day") or []
    mentions_chart = bar_chart(
        "Mentions per day by sentiment",
        f"Stacked bars: negative, neutral and positive mentions per day over {len(per_day)} days.",
        [_short_day(d["day"]) for d in per_day],
        per_day,
        SENTIMENT_SERIES,
    )
    flags_per_day = summary.get("flags_per_day") or []
    flags_chart = bar_chart(
        "Flags per day",
        f"Bars: flags raised per day over {len(flags_per_day)} days.",
        [_short_day(d["day"]) for d in flags_per_day],
        flags_per_day,
        FLAG_SERIES,
    )
    by_age = (summary.get("open_cases") or {}).get("by_age") or {}
    aging_chart = bar_chart(
        "Open cases by age",
        "Bars: open cases (new or contacted) by time since opening: "
        + ", ".join(f"{bucket}: {count}" for bucket, count in by_age.items())
        + ".",
        list(by_age),
        [{"cases": count} for count in by_age.values()],
        AGING_SERIES,
        tick_every=1,
    )
    return (
        '<h2 id="charts">Charts</h2><div class="charts">'
        f"<section><h3>Mentions per day by sentiment</h3>{mentions_chart}</section>"
        f"<section><h3>Flags per day</h3>{flags_chart}</section>"
        f"<section><h3>Open cases by age</h3>{aging_chart}</section></div>"
    )


def _card(label: str, value: str, detail: str = "") -> str:
    more = f'<div class="muted">{_e(detail)}</div>' if detail else ""
    return f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>{more}</div>'


def _counts_table(caption: str, heading: str, counts: dict[str, int]) -> str:
    if not counts:
        return f'<section><h3>{_e(caption)}</h3><p class="muted">None in this period.</p></section>'
    rows = "".join(f'<tr><td>{_e(k)}</td><td class="num">{_e(v)}</td></tr>' for k, v in counts.items())
    return (
        f"<section><h3>{_e(caption)}</h3><table><thead><tr><th>{_e(heading)}</th>"
        f'<th class="num">Flags</th></tr></thead><tbody>{rows}</tbody></table></section>'
    )


def _figures(summary: dict[str, Any]) -> str:
    flags = summary.get("flags") or {}
    open_cases = summary.get("open_cases") or {}
    contact = summary.get("time_to_first_contact") or {}
    resolution = summary.get("time_to_resolution") or {}
    cards = [
        _card("Mentions", str(summary.get("mentions", 0))),
        _card("Negative", _share(summary.get("negative_share")), "share of mentions"),
        _card("Flags", str(flags.get("total", 0))),
        _card("Open cases", str(open_cases.get("total", 0)), "new or contacted"),
        _card(
            "First contact",
            _hours(contact.get("median_hours")),
            f"median; p90 {_hours(contact.get('p90_hours'))}; {contact.get('cases', 0)} cases",
        ),
        _card(
            "Resolution",
            _hours(resolution.get("median_hours")),
            f"median; p90 {_hours(resolution.get('p90_hours'))}; {resolution.get('cases', 0)} cases",
        ),
    ]
    aging = "".join(
        f'<tr><td>{_e(bucket)}</td><td class="num">{_e(count)}</td></tr>'
        for bucket, count in (open_cases.get("by_age") or {}).items()
    )
    return (
        f'<h2 id="summary">Summary</h2><div class="cards">{"".join(cards)}</div><div class="grid">'
        + _counts_table("Flags by rule", "Rule", flags.get("by_rule") or {})
        + _counts_table("Flags by severity", "Severity", flags.get("by_severity") or {})
        + '<section><h3>Open cases by age</h3><table><thead><tr><th>Age</th><th class="num">Cases</th>'
        f"</tr></thead><tbody>{aging}</tbody></table></section></div>"
    )


def _daily_table(summary: dict[str, Any]) -> str:
    days: dict[str, dict[str, Any]] = {}
    for row in summary.get("mentions_per_day") or []:
        days.setdefault(row["day"], {}).update(row)
    for row in summary.get("flags_per_day") or []:
        days.setdefault(row["day"], {})["flags"] = row.get("flags", 0)
    if not days:
        return ""
    rows = "".join(
        f"<tr><td>{_e(day)}</td>"
        + "".join(
            f'<td class="num">{_e(values.get(key, 0))}</td>'
            for key in ("total", "negative", "neutral", "positive")
        )
        + f'<td class="num">{_e(_share(values.get("negative_share")))}</td>'
        f'<td class="num">{_e(values.get("flags", 0))}</td></tr>'
        for day, values in sorted(days.items())
    )
    return (
        "<details><summary>Daily figures</summary><table><thead><tr><th>Day (UTC)</th>"
        '<th class="num">Mentions</th><th class="num">Negative</th><th class="num">Neutral</th>'
        '<th class="num">Positive</th><th class="num">Negative share</th><th class="num">Flags</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></details>"
    )


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def _excerpt(row: dict[str, Any]) -> str:
    title, text = row.get("title"), row.get("text") or ""
    excerpt = " ".join((f"{title} — {text}" if title else text).split())
    return excerpt if len(excerpt) <= EXCERPT else excerpt[: EXCERPT - 1] + "…"


def _post_row(row: dict[str, Any]) -> str:
    severity = str(row.get("severity") or "")
    badge = f"sev sev-{severity}" if severity in SEVERITIES else "sev"
    excerpt = _e(_excerpt(row)) or '<span class="muted">(no text)</span>'
    url = safe_url(row.get("url"))
    post = f'<a href="{_e(url)}" rel="noopener noreferrer nofollow">{excerpt}</a>' if url else excerpt
    meta = " · ".join(_e(part) for part in (row.get("source"), _when(row.get("published_at"))) if part)
    explanation = row.get("explanation") if isinstance(row.get("explanation"), dict) else {}
    why = row.get("why") or explain(explanation)
    description = explanation.get("description") if explanation else None
    case_id = row.get("case_id")
    return (
        f'<tr><td><span class="{badge}">{_e(severity)}</span></td>'
        f"<td>{_e(row.get('rule'))}</td><td>{_e(row.get('brand'))}</td><td>{_e(row.get('author'))}</td>"
        f"<td>{_e(row.get('status') or '—')}</td>"
        f'<td class="num">{_e(f"#{case_id}" if case_id is not None else "—")}</td>'
        f'<td class="post">{post}<div class="muted">{meta}</div></td>'
        f'<td class="why">{_e(why)}'
        + (f'<div class="muted">{_e(description)}</div>' if description else "")
        + "</td></tr>"
    )


def _posts_table(rows: Sequence[dict[str, Any]]) -> str:
    heading = f'<h2 id="posts">Flagged posts, most urgent first ({len(rows)})</h2>'
    if not rows:
        return heading + '<p class="nodata">No flagged posts for this period.</p>'
    columns = ("Severity", "Rule", "Brand", "Author", "Status", "Case", "Post", "Why")
    head = "".join('<th class="num">Case</th>' if c == "Case" else f"<th>{c}</th>" for c in columns)
    body = "".join(_post_row(row) for row in rows)
    return f'{heading}<table class="posts"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _period(summary: dict[str, Any]) -> str:
    since = summary.get("since")
    scope = f"since {since[:16].replace('T', ' ')} UTC" if since else "all time"
    filters = summary.get("filters") or {}
    shown = ", ".join(f"{key}: {value}" for key, value in filters.items())
    return f"Period: {scope}" + (f" · filters: {shown}" if shown else "")


def render_html(
    summary: dict[str, Any], rows: list[dict[str, Any]], *, title: str, generated_at: datetime
) -> str:
    """The whole report as one HTML page: summary figures, three SVG charts, flagged posts.

    `summary` as built by `monitor.summary.build_summary`; `rows` as `queries.flagged_posts`
    returns them (a `why` key is used when present, else derived from `explanation`).
    """
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="meta">{_e(_period(summary))} · generated {_e(_when(generated_at))}</p></header>'
        f"<main>{_figures(summary)}{_charts(summary)}{_daily_table(summary)}{_posts_table(rows)}</main>"
        "</body></html>\n"
    )
