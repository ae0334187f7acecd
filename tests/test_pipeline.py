"""The one ingest path, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from monitor.config import Settings
from monitor.errors import StorageError
from monitor.mention import Mention
from monitor.pipeline import Pipeline
from monitor.storage import queries, state
from monitor.storage.db import Database
from monitor.storage.tables import CaseEventRow, CaseRow, FlagRow, OutboxRow

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
RULES = [
    {
        "name": "churn",
        "severity": "high",
        "when": {"all": [{"words_any": ["résilier", "je quitte"]}, {"not": {"author_is_brand": True}}]},
        "notify": ["ops"],
    },
    {"name": "outage", "severity": "low", "when": {"words_any": ["panne"]}, "notify": ["ops"]},
]
CHANNELS = {"ops": {"type": "slack", "webhook_url": "https://hooks.example/T/B/x", "min_severity": "low"}}


def post(external_id: str, text: str, author: str = "blog.example/Anne", **fields: object) -> Mention:
    return Mention(source="blogs", external_id=external_id, text=text, author_id=author, **fields)  # type: ignore[arg-type]


@pytest.fixture
def pipeline(make_settings: Callable[..., Settings]) -> Pipeline:
    return Pipeline(make_settings(rules=RULES, channels=CHANNELS))


def counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {
            table.__tablename__: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (FlagRow, CaseRow, CaseEventRow, OutboxRow)
        } | {"mentions": queries.count_mentions(session)}


def test_ingest_matches_stores_flags_opens_case_and_queues_alert(db: Database, pipeline: Pipeline) -> None:
    batch = [
        post(
            "1",
            "Bouygues Télécom en panne, je vais RESILIER demain",
            published_at=datetime(2026, 11, 26, 13, 0),
        ),
        post("2", "Bouygues Construction recrute"),
        post("3", "Rien à voir avec une marque"),
    ]
    with db.session() as session:
        result = pipeline.ingest(
            session, batch, source="blogs", stream="http://feed", cursor={"etag": "e1"}, now=NOW
        )
    assert (result.received, result.unmatched, result.stored, result.flags, result.cases_opened) == (
        3,
        2,
        1,
        2,
        1,
    )
    assert result.alerts_queued == 1  # one alert for the new case, not one per rule
    with db.session() as session:
        (flagged_high, flagged_low) = queries.flagged_posts(session)
        assert flagged_high["rule"] == "churn" and flagged_high["severity"] == "high"
        assert flagged_high["explanation"]["matched"] == ["words: RESILIER"]
        assert flagged_low["explanation"]["matched"] == ["words: panne"]
        assert flagged_high["case_id"] == flagged_low["case_id"] and flagged_high["status"] == "new"
        assert flagged_high["priority"] > flagged_low["priority"]
        (mention,) = queries.list_mentions(session)
        assert mention["published_at"] == datetime(2026, 11, 26, 13, tzinfo=UTC)  # naive read as UTC
        assert mention["collected_at"] == NOW
        (alert,) = session.scalars(select(OutboxRow))
        assert (alert.channel, alert.status, alert.kind, alert.case_id) == (
            "ops",
            "pending",
            "flag",
            flagged_high["case_id"],
        )
        assert state.load_cursor(session, "blogs", "http://feed") == {"etag": "e1"}


def test_later_flags_by_the_same_author_attach_to_the_open_case(db: Database, pipeline: Pipeline) -> None:
    with db.session() as session:
        pipeline.ingest(session, [post("1", "Bouygues Telecom en panne")], source="blogs", now=NOW)
    with db.session() as session:
        result = pipeline.ingest(
            session, [post("2", "Bouygues Telecom: je quitte !")], source="blogs", now=NOW
        )
    assert (result.flags, result.cases_opened, result.alerts_queued) == (1, 0, 1)  # escalated low -> high
    with db.session() as session:
        result = pipeline.ingest(
            session, [post("3", "Bouygues Telecom toujours en panne")], source="blogs", now=NOW
        )
    assert (result.flags, result.cases_opened, result.alerts_queued) == (1, 0, 0)  # attached, no new alert
    with db.session() as session:
        (case,) = session.scalars(select(CaseRow))
        assert case.severity == "high"
        kinds = [e.kind for e in session.scalars(select(CaseEventRow).order_by(CaseEventRow.id))]
        assert kinds == ["opened", "escalated", "flagged"]
    with db.session() as session:
        other = pipeline.ingest(
            session,
            [post("4", "Bouygues Telecom en panne", author="blog.example/Bob")],
            source="blogs",
            now=NOW,
        )
    assert other.cases_opened == 1


def test_brand_accounts_are_not_flagged_as_churn(db: Database, pipeline: Pipeline) -> None:
    tweet = post(
        "1", "Vous voulez résilier ? Écrivez-nous en DM", author="x:1", author_handle="bouyguestelecom"
    )
    with db.session() as session:
        result = pipeline.ingest(session, [tweet], source="x", now=NOW)
    assert result.stored == 1 and result.flags == 0
    with db.session() as session:
        (mention,) = queries.list_mentions(session)
        assert mention["author_is_brand"] is True


def test_replayed_batch_stores_nothing_twice_and_skips_analysis(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    analysed: list[str] = []

    def spy(mentions: list[Mention]) -> list[Mention]:
        analysed.extend(m.external_id for m in mentions)
        return mentions

    pipeline = Pipeline(make_settings(rules=RULES, channels=CHANNELS), enrichers=[spy])
    batch = [post("1", "Bouygues Telecom en panne"), post("2", "Bouygues Telecom, je quitte")]
    for _ in range(3):
        with db.session() as session:
            fresh_copies = [post(m.external_id, m.text) for m in batch]
            pipeline.ingest(session, fresh_copies, source="blogs", now=NOW)
    assert analysed == ["1", "2"]  # already-stored posts are not analysed again
    # Post 1 opens the case (alert), post 2 escalates it to high (alert); replays add nothing.
    assert counts(db) == {"mentions": 2, "flags": 2, "cases": 1, "case_events": 2, "outbox": 2}


def test_cursor_and_mentions_commit_together_or_not_at_all(
    db: Database, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(state, "record_success", crash)
    with pytest.raises(StorageError), db.session() as session:
        pipeline.ingest(
            session,
            [post("1", "Bouygues Telecom en panne")],
            source="blogs",
            stream="s",
            cursor={"etag": "new"},
            now=NOW,
        )
    assert counts(db) == {"mentions": 0, "flags": 0, "cases": 0, "case_events": 0, "outbox": 0}
    monkeypatch.undo()
    with db.session() as session:
        assert state.load_cursor(session, "blogs", "s") == {}


def test_min_severity_filters_channels(db: Database, make_settings: Callable[..., Settings]) -> None:
    channels = {"ops": {**CHANNELS["ops"], "min_severity": "high"}}
    pipeline = Pipeline(make_settings(rules=RULES, channels=channels))
    with db.session() as session:
        result = pipeline.ingest(session, [post("1", "Bouygues Telecom en panne")], source="blogs", now=NOW)
    assert result.flags == 1 and result.alerts_queued == 0


def test_default_rule_pack_applies_without_rules(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    pipeline = Pipeline(make_settings())
    batch = [
        post("1", "Bouygues Telecom : je vais résilier et changer d’opérateur", author="a"),
        post("2", "Bouygues Telecom still no signal, this is unacceptable", author="b"),
        post("3", "Bouygues Telecom lance une nouvelle box", author="c"),
    ]
    with db.session() as session:
        pipeline.ingest(session, batch, source="blogs", now=NOW)
    with db.session() as session:
        rules: dict[str, set[str]] = {}
        for flagged in queries.flagged_posts(session):
            rules.setdefault(flagged["external_id"], set()).add(flagged["rule"])
    assert rules["1"] >= {"churn-threat"}
    assert rules["2"] == {"complaint"}
    assert "3" not in rules


def test_default_rule_pack_alerts_every_configured_channel(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    pipeline = Pipeline(make_settings(channels=CHANNELS))
    with db.session() as session:
        result = pipeline.ingest(
            session, [post("1", "Bouygues Telecom : je vais résilier")], source="blogs", now=NOW
        )
    assert result.alerts_queued == 1
