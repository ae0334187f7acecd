"""The report's summary against hand-computed numbers, and the self-contained HTML page."""

from __future__ import annotations

import html
import re
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from monitor.report import with_why
from monitor.report_html import render_html, safe_url
from monitor.storage.db import Database
from monitor.storage.queries import Filters, flagged_posts
from monitor.storage.tables import CaseRow, FlagRow, MentionRow
from monitor.summary import build_summary, percentile

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = "<script>alert(1)</script>"


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


# key: (published_at or None, collected_at, sentiment, brand, source, url, author, text)
MENTIONS: dict[str, tuple[Any, ...]] = {
    "m1": (at(18, 10), at(18, 11), -0.8, "Acme", "rss", "https://example.com/p/1?a=1&b=2",
           f"Eve {SCRIPT}", f"{SCRIPT} awful service"),
    "m2": (at(18, 15), at(18, 16), 0.1, "Acme", "rss", None, "Bob", "meh"),
    "m3": (None, at(18, 23, 30), None, "Acme", "rss", None, "Carl", "no date, unscored"),
    "m4": (at(19, 9), at(19, 10), -0.25, "Acme", "rss", "http://example.org/4", "Dan", "negative edge"),
    "m5": (at(19, 10), at(19, 11), 0.25, "Acme", "rss", None, "Fay", "positive edge"),
    "m6": (at(20, 8), at(20, 9), 0.9, "Acme", "rss", "javascript:alert(1)", "Gus", "love it"),
    # 01:30 at UTC+2 is 23:30 UTC the day before: days are UTC days.
    "m7": (datetime(2026, 11, 19, 1, 30, tzinfo=timezone(timedelta(hours=2))), at(19, 0, 30), -0.3,
           "Acme", "rss", 'https://evil.example/"onmouseover="alert(1)', "Hal", "late night"),
    "m8": (at(20, 9), at(20, 10), -0.5, "Other", "twitter", None, "Ivy", "other brand"),
    "m9": (at(20, 10), at(20, 11), 0.0, "Acme", "rss", None, "Jo", "flat"),
    "m10": (at(15, 12), at(15, 13), 0.2, "Acme", "rss", None, "Kim", "early"),
}  # fmt: skip

# key: (brand, status, opened_at, first_contact_at, resolved_at); age at NOW in the comment.
CASES: dict[str, tuple[Any, ...]] = {
    "c1": ("Acme", "contacted", at(20, 0), at(20, 2), None),  # 12 h: <1d; contact 2 h
    "c2": ("Acme", "new", at(19, 12), None, None),  # exactly 1 d: 1-3d
    "c3": ("Acme", "new", at(16, 12), None, None),  # 4 d: 3-7d
    "c4": ("Other", "contacted", at(10, 12), at(11, 0), None),  # 10 d: >7d; contact 12 h
    "c5": ("Acme", "resolved", at(1), at(1, 6), at(2)),  # contact 6 h, resolution 24 h
    "c6": ("Acme", "resolved", at(5), at(5, 1), at(8)),  # contact 1 h, resolution 72 h
    "c7": ("Acme", "dismissed", at(12), None, None),
    "c8": ("Acme", "resolved", at(18), at(18, 10), at(19)),  # contact 10 h, resolution 24 h
    "c9": ("Acme", "new", at(17, 12), None, None),  # exactly 3 d: 3-7d
    "c10": ("Acme", "contacted", at(13, 12), at(13, 16), None),  # exactly 7 d: >7d; contact 4 h
}

# (mention, rule, severity, priority, created_at, case)
FLAGS = [
    ("m1", "complaint", "high", 0.8, at(18, 11), "c1"),
    ("m1", "churn", "critical", 0.95, at(18, 11), "c1"),
    ("m4", "complaint", "medium", 0.5, at(19, 10), "c2"),
    ("m7", "churn", "high", 0.7, at(19, 0, 31), "c3"),
    ("m8", "complaint", "low", 0.3, at(20, 10), "c4"),
    ("m6", "praise", "low", 0.1, at(16, 9), None),
]


def seed(db: Database) -> None:
    with db.session() as session:
        mentions = {}
        for key, (published, collected, sentiment, brand, source, url, author, text) in MENTIONS.items():
            mentions[key] = MentionRow(
                source=source,
                external_id=key,
                url=url,
                text=text,
                author_id=f"id-{key}",
                author_name=author,
                published_at=published,
                collected_at=collected,
                brand=brand,
                sentiment=sentiment,
            )
        cases = {
            key: CaseRow(
                brand=brand,
                author_key=f"author-{key}",
                author_name=key,
                status=status,
                severity="high",
                priority=0.5,
                opened_at=opened,
                updated_at=opened,
                first_contact_at=contact,
                resolved_at=resolved,
            )
            for key, (brand, status, opened, contact, resolved) in CASES.items()
        }
        session.add_all([*mentions.values(), *cases.values()])
        session.flush()
        for mention, rule, severity, priority, created, case in FLAGS:
            session.add(
                FlagRow(
                    mention_id=mentions[mention].id,
                    case_id=cases[case].id if case else None,
                    rule=rule,
                    severity=severity,
                    priority=priority,
                    explanation={
                        "rule": rule,
                        "description": f"Rule about {SCRIPT}",
                        "matched": [f"awful {SCRIPT}"],
                    },
                    created_at=created,
                )
            )


@pytest.fixture
def seeded(db: Database) -> Database:
    seed(db)
    return db


def summary_of(db: Database, filters: Filters | None = None) -> dict[str, Any]:
    with db.session() as session:
        return build_summary(session, filters or Filters(), NOW)


def page_of(db: Database, filters: Filters | None = None) -> tuple[str, list[dict[str, Any]]]:
    filters = filters or Filters()
    with db.session() as session:
        summary = build_summary(session, filters, NOW)
        rows = with_why(flagged_posts(session, filters))
    return render_html(summary, rows, title="Acme report", generated_at=NOW), rows


def day(d: str, total: int, negative: int, neutral: int, positive: int) -> dict[str, Any]:
    share = round(negative / total, 4) if total else None
    return {
        "day": d,
        "total": total,
        "negative": negative,
        "neutral": neutral,
        "positive": positive,
        "negative_share": share,
    }


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile([1, 2, 4, 6, 10, 12], 0.9) == pytest.approx(11.0)


@pytest.mark.parametrize(
    "filters",
    [Filters(), Filters(brand="Acme"), Filters(source="twitter"), Filters(since=NOW - timedelta(days=2))],
)
def test_the_table_reports_summary_without_daily_series_has_the_same_figures(
    seeded: Database, filters: Filters
) -> None:
    """The table report counts mentions in one pass, without the daily series it does not show."""
    with seeded.session() as session:
        daily = build_summary(session, filters, NOW)
        totals = build_summary(session, filters, NOW, daily=False)
    assert totals["mentions_per_day"] == []
    assert {k: v for k, v in totals.items() if k != "mentions_per_day"} == {
        k: v for k, v in daily.items() if k != "mentions_per_day"
    }
    assert totals["mentions"] == sum(day["total"] for day in daily["mentions_per_day"])


def test_summary_matches_hand_computed_numbers(seeded: Database) -> None:
    summary = summary_of(seeded)
    assert summary["mentions"] == 10
    assert summary["negative_share"] == 0.4  # m1, m4 (-0.25 counts), m7, m8
    assert summary["flags"] == {
        "total": 6,
        "by_rule": {"complaint": 3, "churn": 2, "praise": 1},
        "by_severity": {"critical": 1, "high": 2, "medium": 1, "low": 2},
    }
    assert summary["open_cases"] == {"total": 6, "by_age": {"<1d": 1, "1-3d": 1, "3-7d": 2, ">7d": 2}}
    # first contact, hours: 1, 2, 4, 6, 10, 12 -> median (4+6)/2, p90 at rank 4.5 -> 10 + 0.5*2
    assert summary["time_to_first_contact"] == {"cases": 6, "median_hours": 5.0, "p90_hours": 11.0}
    # resolution, hours: 24, 24, 72 -> median 24, p90 at rank 1.8 -> 24 + 0.8*48
    assert summary["time_to_resolution"] == {"cases": 3, "median_hours": 24.0, "p90_hours": 62.4}
    assert summary["mentions_per_day"] == [
        day("2026-11-15", 1, 0, 1, 0),
        day("2026-11-16", 0, 0, 0, 0),
        day("2026-11-17", 0, 0, 0, 0),
        day("2026-11-18", 4, 2, 2, 0),  # m1, m2, m3 (collected_at, no sentiment), m7 (UTC day)
        day("2026-11-19", 2, 1, 0, 1),  # m4 at -0.25 negative, m5 at 0.25 positive
        day("2026-11-20", 3, 1, 1, 1),
    ]
    assert summary["mentions_per_day"][-1]["negative_share"] == 0.3333
    assert summary["flags_per_day"] == [
        {"day": "2026-11-16", "flags": 1},
        {"day": "2026-11-17", "flags": 0},
        {"day": "2026-11-18", "flags": 2},
        {"day": "2026-11-19", "flags": 2},
        {"day": "2026-11-20", "flags": 1},
    ]
    assert summary["since"] is None and summary["filters"] == {}


def test_summary_brand_filter(seeded: Database) -> None:
    summary = summary_of(seeded, Filters(brand="Acme"))
    assert summary["mentions"] == 9
    assert summary["flags"]["total"] == 5
    assert summary["open_cases"] == {"total": 5, "by_age": {"<1d": 1, "1-3d": 1, "3-7d": 2, ">7d": 1}}
    # hours 1, 2, 4, 6, 10 -> median 4, p90 at rank 3.6 -> 6 + 0.6*4
    assert summary["time_to_first_contact"] == {"cases": 5, "median_hours": 4.0, "p90_hours": 8.4}
    assert summary["filters"] == {"brand": "Acme"}


def test_summary_since_filter(seeded: Database) -> None:
    since = at(19)
    summary = summary_of(seeded, Filters(since=since))
    # collected since the 19th: m7 (published the 18th, UTC), m4, m5, m6, m8, m9
    assert summary["mentions"] == 6
    assert summary["mentions_per_day"] == [
        day("2026-11-18", 1, 1, 0, 0),
        day("2026-11-19", 2, 1, 0, 1),
        day("2026-11-20", 3, 1, 1, 1),
    ]
    assert summary["flags"]["by_rule"] == {"complaint": 2, "churn": 1}
    assert summary["flags_per_day"] == [{"day": "2026-11-19", "flags": 2}, {"day": "2026-11-20", "flags": 1}]
    assert summary["open_cases"]["total"] == 6  # aging is the state now, whatever the period
    assert summary["time_to_first_contact"] == {"cases": 1, "median_hours": 2.0, "p90_hours": 2.0}
    # c8, resolved on the 19th at midnight after 24 h
    assert summary["time_to_resolution"] == {"cases": 1, "median_hours": 24.0, "p90_hours": 24.0}
    assert summary["since"] == since.isoformat()


def test_summary_flag_filters_match_flagged_posts(seeded: Database) -> None:
    for filters in (
        Filters(rule="complaint"),
        Filters(severity="low"),
        Filters(status="new"),
        Filters(source="twitter"),
        Filters(brand="Acme", since=at(19)),
    ):
        with seeded.session() as session:
            expected = len(flagged_posts(session, filters))
            assert build_summary(session, filters, NOW)["flags"]["total"] == expected, filters
    assert summary_of(seeded, Filters(status="resolved"))["open_cases"]["total"] == 0
    assert summary_of(seeded, Filters(rule="churn"))["open_cases"]["total"] == 2  # c1, c3
    assert summary_of(seeded, Filters(source="twitter"))["open_cases"]["by_age"][">7d"] == 1


def test_empty_database_summary_and_page(db: Database) -> None:
    summary = summary_of(db)
    assert summary["mentions"] == 0 and summary["negative_share"] is None
    assert summary["flags"] == {"total": 0, "by_rule": {}, "by_severity": {}}
    assert summary["open_cases"]["total"] == 0
    assert summary["time_to_resolution"]["median_hours"] is None
    assert summary["mentions_per_day"] == [] and summary["flags_per_day"] == []
    page = render_html(summary, [], title="Empty", generated_at=NOW)
    assert "<svg" not in page
    assert page.count('class="nodata"') == 4  # three charts and the posts table
    assert "No flagged posts" in page


def test_page_escapes_post_text_authors_and_rules(seeded: Database) -> None:
    page, rows = page_of(seeded)
    assert "<script" not in page.lower()
    escaped = html.escape(SCRIPT)
    assert f"Eve {escaped}" in page  # author
    assert f"{escaped} awful service" in page  # post text
    assert f"Rule about {escaped}" in page  # rule description
    assert f"awful {escaped}" in page  # why
    assert 'onmouseover="' not in page
    assert "javascript:" not in page
    # most urgent first, as flagged_posts orders them
    assert [row["rule"] for row in rows][:2] == ["churn", "complaint"]
    assert page.index("awful service") < page.index("negative edge")


def test_page_has_three_accessible_charts_and_only_post_links(seeded: Database) -> None:
    page, rows = page_of(seeded)
    charts = re.findall(r"<svg\b[^>]*>.*?</svg>", page, flags=re.S)
    assert len(charts) == 3 and page.count("<svg") == 3
    for chart, title in zip(
        charts, ("Mentions per day by sentiment", "Flags per day", "Open cases by age"), strict=True
    ):
        assert 'role="img"' in chart and 'aria-label="' in chart
        assert re.search(r"<svg\b[^>]*>\s*<title>" + re.escape(title) + "</title>", chart)
    links = {html.unescape(href) for href in re.findall(r'href="([^"]*)"', page)}
    expected = {row["url"] for row in rows if safe_url(row["url"])}
    assert (
        links
        == expected
        == {
            "https://example.com/p/1?a=1&b=2",
            "http://example.org/4",
            'https://evil.example/"onmouseover="alert(1)',
        }
    )
    without_links = re.sub(r'href="[^"]*"', "", page)
    assert not re.search(r"https?:", without_links)  # no CDN, no fonts, no SVG namespace URL
    assert "src=" not in page and "@import" not in page and "url(" not in page


def test_render_html_escapes_every_field() -> None:
    hostile = '<script>alert("x")</script>'
    summary = {
        "mentions": 1,
        "since": None,
        "filters": {"brand": hostile},
        "flags": {"total": 1, "by_rule": {hostile: 1}, "by_severity": {hostile: 1}},
        "open_cases": {"total": 0, "by_age": {"<1d": 0, "1-3d": 0, "3-7d": 0, ">7d": 0}},
        "mentions_per_day": [
            {"day": "2026-11-20", "total": 1, "negative": 1, "neutral": 0, "positive": 0, "negative_share": 1}
        ],
        "flags_per_day": [{"day": "2026-11-20", "flags": 1}],
    }
    row = {
        "severity": hostile,
        "rule": hostile,
        "brand": hostile,
        "author": hostile,
        "status": hostile,
        "case_id": 3,
        "title": hostile,
        "text": hostile,
        "source": hostile,
        "url": "data:text/html,<script>alert(1)</script>",
        "explanation": {"rule": hostile, "description": hostile, "matched": [hostile]},
    }
    page = render_html(summary, [row], title=hostile, generated_at=NOW)
    assert "<script" not in page.lower()
    assert page.count(html.escape(hostile)) >= 10
    assert "href=" not in page
    assert page.count("<svg") == 2 and "Open cases by age: no data" in page


def test_safe_url_accepts_only_http_and_https() -> None:
    assert safe_url("https://x.example/a?b=1") == "https://x.example/a?b=1"
    assert safe_url("HTTP://x.example") == "HTTP://x.example"
    for bad in ("javascript:alert(1)", "data:text/html,x", "//x.example/a", "/relative", "https://", None, 3):
        assert safe_url(bad) is None
    assert safe_url("https://x.example/a b") is None
    assert safe_url("java\nscript:alert(1)") is None


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"
)
def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'report.db'}")
    try:
        seed(db)
        page, _ = page_of(db)
    finally:
        db.dispose()
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    done = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count("<svg") == 3, dom[:2000]
    for title in ("Mentions per day by sentiment", "Flags per day", "Open cases by age"):
        assert f"<title>{title}</title>" in dom
    assert dom.count("<rect") >= 10
    assert "Eve &lt;script&gt;" in dom and "<script" not in dom.lower()
    # The page has no script: any console message (an error, a CSP violation) is a failure.
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={shot}", "--window-size=1280,1600", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_summary_ignores_the_row_limit(seeded: Database) -> None:
    """The report's limit caps the table of posts, never the summary."""
    assert summary_of(seeded, Filters(limit=1)) == summary_of(seeded, Filters())
