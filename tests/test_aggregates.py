"""Aggregate rules on synthetic timelines with a frozen clock, on SQLite and PostgreSQL:
volume spikes, silent sources and brands, runs of complaints, cooldowns, outbox and messages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from monitor.alerts.outbox import build_message
from monitor.config import Settings, settings_from_dict
from monitor.errors import ConfigError
from monitor.mention import Mention
from monitor.pipeline import Pipeline, pass_through
from monitor.rules.aggregates import evaluate_aggregates
from monitor.storage import queries
from monitor.storage.db import Database
from monitor.storage.tables import AggregateAlertRow, OutboxRow

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
BRAND = "Bouygues Telecom"
HOUR = timedelta(hours=1)
CHANNELS = {
    "ops": {"type": "slack", "webhook_url": "https://hooks.example/T/B/x"},
    "managers": {"type": "slack", "webhook_url": "https://hooks.example/T/B/y", "min_severity": "critical"},
}
SOURCES = [
    {"type": "rss", "name": "blogs", "urls": ["https://example.com/a"]},
    {"type": "rss", "name": "news", "urls": ["https://example.com/b"]},
    {"type": "rss", "name": "fresh", "urls": ["https://example.com/c"]},
    {"type": "rss", "name": "off", "urls": ["https://example.com/d"], "enabled": False},
]
counter = iter(range(1_000_000))


def store(db: Database, times: list[datetime], *, source: str = "blogs", brand: str = BRAND) -> None:
    """Mentions published (and collected) at these times."""
    with db.session() as session:
        queries.insert_mentions(
            session,
            [
                Mention(
                    source=source,
                    external_id=str(next(counter)),
                    text="x",
                    brand=brand,
                    published_at=at,
                    collected_at=at,
                )
                for at in times
            ],
        )


def evaluate(db: Database, settings: Settings, now: datetime) -> list[Any]:
    with db.session() as session:
        return evaluate_aggregates(session, settings, now)


def table_counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        alerts = int(session.scalar(select(func.count()).select_from(AggregateAlertRow)) or 0)
        outbox = int(session.scalar(select(func.count()).select_from(OutboxRow)) or 0)
    return alerts, outbox


SPIKE = {
    "name": "volume-spike",
    "type": "spike",
    "window": "1h",
    "reference": "1d",
    "ratio": 3,
    "min_count": 5,
    "notify": ["ops", "managers"],
}


def test_spike_alerts_once_then_again_after_its_cooldown(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(aggregates=[SPIKE], channels=CHANNELS)
    # The usual: one mention an hour over the reference day; then 10 in the last hour.
    store(db, [NOW - HOUR - k * HOUR for k in range(24)])
    assert evaluate(db, settings, NOW) == []
    store(db, [NOW - timedelta(minutes=5 * k + 1) for k in range(10)])
    (result,) = evaluate(db, settings, NOW)
    assert (result.rule, result.kind, result.subject, result.brand) == (
        "volume-spike",
        "spike",
        f"brand {BRAND}",
        BRAND,
    )
    assert (result.value, result.reference) == (10.0, 1.0)
    assert result.matched == (
        f"10 mentions of {BRAND} in the last 1h, 10.0x the usual 1.0 per 1h (over the previous 1d)",
    )
    assert result.alert_id is not None and result.queued == 1  # "managers" wants critical only
    with db.session() as session:
        (row,) = session.scalars(select(OutboxRow))
        assert (row.kind, row.channel, row.event_key, row.flag_id, row.case_id) == (
            "aggregate",
            "ops",
            f"aggregate:{result.alert_id}",
            None,
            None,
        )
        message = build_message(session, row)
        assert message.headline == f"[HIGH] volume-spike — {BRAND}"
        assert message.why == result.matched
        assert message.text == f"spike: brand {BRAND}"
        assert message.command is None
    # Ten minutes later the spike goes on: the cooldown (the window) keeps it quiet.
    (quiet,) = evaluate(db, settings, NOW + timedelta(minutes=10))
    assert quiet.alert_id is None and quiet.queued == 0
    assert table_counts(db) == (1, 1)
    # Past the cooldown, a spike still in progress alerts again.
    store(db, [NOW + timedelta(minutes=5 * k + 1) for k in range(12)])
    (again,) = evaluate(db, settings, NOW + timedelta(minutes=70))
    assert again.alert_id is not None and again.alert_id != result.alert_id
    assert table_counts(db) == (2, 2)


@pytest.mark.parametrize(
    ("current", "overrides", "fires"),
    [
        (4, {}, False),  # below min_count
        (5, {}, True),
        (5, {"ratio": 6}, False),  # 5x the usual only
        (5, {"brands": ["Orange"]}, False),  # another brand's rule
    ],
)
def test_spike_needs_min_count_and_ratio(
    db: Database, make_settings: Callable[..., Settings], current: int, overrides: dict[str, Any], fires: bool
) -> None:
    settings = make_settings(
        brands=[{"name": BRAND}, {"name": "Orange"}], aggregates=[{**SPIKE, "notify": [], **overrides}]
    )
    store(db, [NOW - HOUR - k * HOUR for k in range(24)])
    store(db, [NOW - timedelta(minutes=k + 1) for k in range(current)])
    assert bool(evaluate(db, settings, NOW)) is fires


def test_spike_from_nothing_and_future_posts_do_not_count(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(aggregates=[{**SPIKE, "notify": []}])
    store(db, [NOW + timedelta(hours=2)] * 3)  # a skewed clock: published in the future
    # Undated posts count at their collection time.
    with db.session() as session:
        queries.insert_mentions(
            session,
            [
                Mention(
                    source="blogs",
                    external_id=f"u{k}",
                    text="x",
                    brand=BRAND,
                    collected_at=NOW - timedelta(minutes=k),
                )
                for k in range(5)
            ],
        )
    (result,) = evaluate(db, settings, NOW)
    assert result.value == 5 and result.reference == 0
    assert result.matched[0].endswith("none in the previous 1d")
    assert table_counts(db) == (1, 0)  # stored, no channel to notify


def test_flatline_finds_the_stalled_collector(db: Database, make_settings: Callable[..., Settings]) -> None:
    rule = {
        "name": "stalled",
        "type": "flatline",
        "window": "6h",
        "notify": ["ops", "managers"],
        "severity": "critical",
    }
    settings = make_settings(sources=SOURCES, channels=CHANNELS, aggregates=[rule])
    store(db, [NOW - 9 * HOUR, NOW - 7 * HOUR], source="blogs")
    store(db, [NOW - 1 * HOUR], source="news")
    store(db, [NOW - 30 * HOUR], source="off")  # disabled: silent on purpose
    # "fresh" never collected anything: a new source is not a stalled one.
    (result,) = evaluate(db, settings, NOW)
    assert (result.kind, result.subject, result.source, result.brand) == (
        "flatline",
        "source blogs",
        "blogs",
        None,
    )
    assert result.value == 7.0
    assert result.matched == (
        "no new mention from source blogs for 7.0h (last collected 2026-11-26 05:00 UTC; silent allowed: 6h)",
    )
    assert result.queued == 2  # critical: both channels
    with db.session() as session:
        row = session.scalars(select(OutboxRow)).first()
        assert row is not None
        message = build_message(session, row)
        assert message.headline == "[CRITICAL] stalled — source blogs"
        assert message.source == "blogs"
    assert evaluate(db, settings, NOW + 5 * HOUR)[0].alert_id is None  # within the 6h cooldown
    assert evaluate(db, settings, NOW + 7 * HOUR)[0].alert_id is not None
    only_news = make_settings(
        sources=SOURCES, aggregates=[{**rule, "name": "n", "sources": ["news"], "notify": []}]
    )
    assert evaluate(db, only_news, NOW) == []


def test_flatline_per_brand(db: Database, make_settings: Callable[..., Settings]) -> None:
    rule = {"name": "quiet-brand", "type": "flatline", "per": "brand", "window": "1d"}
    settings = make_settings(brands=[{"name": BRAND}, {"name": "Orange"}], aggregates=[rule])
    store(db, [NOW - 2 * 24 * HOUR])
    store(db, [NOW - HOUR], brand="Orange")
    (result,) = evaluate(db, settings, NOW)
    assert (result.subject, result.brand, result.source) == (f"brand {BRAND}", BRAND, None)
    assert result.matched[0].startswith(f"no new mention from brand {BRAND} for 2.0d")


def test_frequency_counts_flagged_posts_per_brand(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    rules = [
        {"name": "complaint", "when": {"words_any": ["panne"]}},
        {"name": "outage", "when": {"words_any": ["panne"]}},
        {"name": "praise", "when": {"words_any": ["merci"]}},
    ]
    aggregate = {
        "name": "complaint-wave",
        "type": "frequency",
        "count": 3,
        "window": "1h",
        "rules": ["complaint"],
        "notify": ["ops"],
    }
    settings = make_settings(rules=rules, channels=CHANNELS, aggregates=[aggregate])
    pipeline = Pipeline(settings, enrichers=[pass_through])

    def flag(text: str, at: datetime) -> None:
        mention = Mention(
            source="blogs",
            external_id=str(next(counter)),
            text=f"{BRAND} {text}",
            author_id=f"x:{next(counter)}",
        )
        with db.session() as session:
            pipeline.ingest(session, [mention], source="blogs", now=at)

    flag("panne", NOW - 2 * HOUR)  # too old
    flag("panne", NOW - 30 * timedelta(minutes=1))
    flag("merci", NOW - 20 * timedelta(minutes=1))  # another rule
    flag("panne", NOW - 10 * timedelta(minutes=1))
    assert evaluate(db, settings, NOW) == []
    flag("panne", NOW)
    (result,) = evaluate(db, settings, NOW)
    assert (result.kind, result.value, result.reference) == ("frequency", 3.0, 3.0)
    assert result.matched == (f"3 posts about {BRAND} flagged by complaint in the last 1h (alert from 3)",)
    assert result.queued == 1
    any_rule = make_settings(rules=rules, aggregates=[{**aggregate, "rules": [], "count": 4, "notify": []}])
    (counted,) = evaluate(db, any_rule, NOW)
    assert counted.value == 4.0 and "by any rule" in counted.matched[0]


def test_disabled_or_absent_aggregates_do_nothing(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    store(db, [NOW - timedelta(minutes=k) for k in range(50)])
    assert evaluate(db, make_settings(), NOW) == []
    assert evaluate(db, make_settings(aggregates=[{**SPIKE, "notify": [], "enabled": False}]), NOW) == []
    assert table_counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("aggregate", "message"),
    [
        ({"name": "a", "type": "wave"}, "aggregates[0]: unknown type 'wave'"),
        (
            {"name": "a", "type": "spike", "notify": ["pager"]},
            "aggregates[0].notify[0]: unknown channel 'pager'",
        ),
        ({"name": "a", "type": "spike", "brands": ["Nope"]}, "aggregates[0].brands[0]: unknown brand 'Nope'"),
        (
            {"name": "a", "type": "spike", "ratio": 0.5},
            "aggregates[0].ratio: Input should be greater than or equal to 1",
        ),
        ({"name": "a", "type": "spike", "window": "soon"}, "aggregates[0].window: expected a duration"),
        (
            {"name": "a", "type": "flatline", "sources": ["nope"]},
            "aggregates[0].sources[0]: unknown source 'nope'",
        ),
        (
            {"name": "a", "type": "flatline", "per": "brand", "sources": ["blogs"]},
            "`sources` needs `per: source`",
        ),
        ({"name": "a", "type": "frequency"}, "aggregates[0].count: required key is missing"),
        (
            {"name": "a", "type": "frequency", "count": 2, "rules": ["nope"]},
            "aggregates[0].rules[0]: unknown rule 'nope'; known: churn-threat, complaint",
        ),
        ({"name": "a", "type": "spike", "bogus": 1}, "aggregates[0].bogus: unknown key"),
    ],
)
def test_bad_aggregates_are_config_errors(aggregate: dict[str, Any], message: str) -> None:
    raw = {"brands": [{"name": BRAND}], "sources": SOURCES[:1], "aggregates": [aggregate]}
    with pytest.raises(ConfigError) as info:
        settings_from_dict(raw, file="m.yaml")
    assert message in str(info.value)


def test_aggregate_names_are_unique() -> None:
    raw = {
        "brands": [{"name": BRAND}],
        "aggregates": [{"name": "a", "type": "spike"}, {"name": "a", "type": "spike"}],
    }
    with pytest.raises(ConfigError, match=r"aggregates\[1\]\.name: duplicate aggregate rule name 'a'"):
        settings_from_dict(raw)
