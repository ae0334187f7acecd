"""Render rows for people (rich tables) and tools (JSON, CSV)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

FORMATS = ("table", "json", "csv")

MENTION_TABLE = ("id", "published_at", "brand", "source", "author", "lang", "text")
REPORT_TABLE = ("flag_id", "case_id", "severity", "rule", "brand", "author", "status", "text", "why")
SOURCE_TABLE = (
    "source",
    "stream",
    "status",
    "last_ok_at",
    "last_error",
    "errors",
    "next_poll_at",
    "mentions",
    "reads",
)


def explain(explanation: dict[str, Any] | None) -> str:
    """One line a support agent can read: the rule's evidence, joined."""
    if not explanation:
        return ""
    matched = [str(m) for m in explanation.get("matched") or () if m]
    return "; ".join(matched) or str(explanation.get("rule") or "")


def _csv_safe(value: Any) -> Any:
    """Post text is attacker-controlled: never let a spreadsheet read it as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    text = " ".join(visible_text(str(value)).split())
    limit = 140 if column in ("text", "why", "last_error") else 60
    return text if len(text) <= limit else text[: limit - 1] + "…"


def with_why(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "why": explain(row.get("explanation"))} for row in rows]


def _excerpt(row: dict[str, Any]) -> str:
    title, text = row.get("title"), row.get("text") or ""
    return f"{title} — {text}" if title else text


def render(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    *,
    table_columns: Sequence[str],
    title: str | None = None,
    out: TextIO,
    width: int | None = None,
) -> None:
    """Write `rows` to `out` as a rich table, a JSON array, or CSV (all columns)."""
    if fmt == "json":
        json.dump(
            [{k: _jsonable(v) for k, v in row.items()} for row in rows], out, ensure_ascii=False, indent=2
        )
        out.write("\n")
    elif fmt == "csv":
        columns = list(rows[0].keys()) if rows else list(table_columns)
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: _csv_safe(explain(v) if k == "explanation" else ("" if v is None else _jsonable(v)))
                    for k, v in row.items()
                }
            )
    elif fmt == "table":
        console = Console(file=out, width=width or (None if out.isatty() else 160), soft_wrap=False)
        table = Table(title=title, show_lines=False, expand=False)
        for column in table_columns:
            table.add_column(column, overflow="fold", max_width=70 if column in ("text", "why") else None)
        for row in rows:
            # Post text is attacker-controlled: never let it be read as rich markup.
            values = {**row, "text": _excerpt(row)}
            table.add_row(*(escape(_cell(values.get(column), column)) for column in table_columns))
        console.print(table)
        if not rows:
            console.print("(nothing to show)")
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def render_to_string(rows: Sequence[dict[str, Any]], fmt: str, **kwargs: Any) -> str:
    buffer = io.StringIO()
    render(rows, fmt, out=buffer, **kwargs)
    return buffer.getvalue()


def render_timeline(story: dict[str, Any], fmt: str, *, out: TextIO) -> None:
    """`monitor cases show`: the case header, then one line per event, oldest first."""
    if fmt == "json":
        json.dump(story, out, ensure_ascii=False, indent=2, default=_jsonable)
        out.write("\n")
        return
    case = story["case"]
    console = Console(file=out, width=None if out.isatty() else 140, soft_wrap=False)
    console.print(
        escape(
            visible_text(
                f"Case #{case['id']} [{case['status']}] {case['severity']} — {case['brand']} — {case['author']}"
                f" — assigned to {case['assignee'] or 'nobody'}"
                + (f" — hint: {case['hint']}" if case.get("hint") else "")
            )
        ),
        highlight=False,
    )
    table = Table(show_lines=False)
    for column in ("at", "event", "by", "details"):
        table.add_column(column, overflow="fold", max_width=90 if column == "details" else None)
    for entry in story["timeline"]:
        details: list[str] = []
        if entry.get("note"):
            details.append(str(entry["note"]))
        mention = entry.get("mention")
        if mention:
            scores = [
                f"{label} {value:+.2f}" if label == "sentiment" else f"{label} {value:.2f}"
                for label, value in (
                    ("sentiment", mention.get("sentiment")),
                    ("complaint", mention.get("complaint_score")),
                )
                if value is not None
            ]
            details.append(
                f"{_cell(mention['text'], 'text')} ({', '.join(scores)})"
                if scores
                else _cell(mention["text"], "text")
            )
        for flag in entry.get("flags") or ():
            details.append(f"flag {flag['rule']} ({flag['severity']}): {'; '.join(flag['why'])}")
        table.add_row(
            _cell(entry["at"], "at"),
            escape(entry["event"]),
            escape(_cell(entry.get("actor"), "actor")),
            escape("\n".join(visible_text(detail) for detail in details)),
        )
    console.print(table)
    if story["alerts"]:
        sent = ", ".join(f"#{a['id']} {a['kind']} to {a['channel']}: {a['status']}" for a in story["alerts"])
        console.print(escape(visible_text(f"Alerts: {sent}")), highlight=False)


def render_summary(summary: dict[str, Any], *, out: TextIO) -> None:
    """The report's figures in a few lines, above the table of flagged posts."""

    def hours(block: dict[str, Any]) -> str:
        if not block.get("cases"):
            return "no cases yet"
        return f"median {block['median_hours']:.1f} h, p90 {block['p90_hours']:.1f} h over {block['cases']} cases"

    flags = summary["flags"]
    share = summary.get("negative_share")
    lines = [
        f"Mentions: {summary['mentions']}" + (f" ({share:.0%} negative)" if share is not None else ""),
        f"Flags: {flags['total']}"
        + (
            " — " + ", ".join(f"{rule} {count}" for rule, count in flags["by_rule"].items())
            if flags["by_rule"]
            else ""
        )
        + (
            " — " + ", ".join(f"{sev} {count}" for sev, count in flags["by_severity"].items())
            if flags["by_severity"]
            else ""
        ),
        f"Open cases: {summary['open_cases']['total']} — "
        + ", ".join(f"{age}: {count}" for age, count in summary["open_cases"]["by_age"].items()),
        f"Time to first contact: {hours(summary['time_to_first_contact'])}",
        f"Time to resolution: {hours(summary['time_to_resolution'])}",
    ]
    out.write("\n".join(visible_text(line) for line in lines) + "\n\n")


# ANSI/VT sequences (CSI, OSC such as hyperlinks and window titles, other ESC pairs), and single C1 codes.
_TERMINAL_SEQUENCE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|[\x80-\x9f]"
)
# Zero-width joiners shape emoji and Persian script: harmless, kept. Bidi overrides and isolates
# (U+202A-E, U+2066-9) could make a terminal show text in another order than it is: dropped.
_KEEP = frozenset("\u200c\u200d")


def visible_text(text: str) -> str:
    """Text as a person will see it (terminal or page): escape sequences and control characters removed.

    Posts are attacker-controlled; a raw ESC could recolour, retitle or hide what an agent reads in a
    terminal, and a bidi override could reorder it on screen. Newlines and tabs become spaces.
    """
    text = _TERMINAL_SEQUENCE.sub("", text)
    return "".join(ch if ch.isprintable() or ch in _KEEP else " " if ch in "\n\t" else "" for ch in text)
