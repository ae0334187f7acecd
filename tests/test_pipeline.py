"""The one ingest path, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from conftest import POSTGRES
from sqlalchemy import func, select

from monitor.config import Settings
from monitor.errors import StorageError
from monitor.mention import Mention
from monitor.pipeline import Pipeline
from monitor.storage import queries, state
from monitor.storage.db import Database
from monitor.storage.tables import CaseEventRow, CaseRow, FlagRow, MentionRow, OutboxRow

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


# A batch's flags, cases and alerts are worked out together and written in a few statements;
# what a user sees must be what one post at a time gave.


def scored(mentions: list[Mention]) -> list[Mention]:
    """A stand-in analysis: "merci" is clearly positive, anything else neutral."""
    for mention in mentions:
        mention.sentiment = 0.9 if "merci" in mention.text.lower() else 0.0
        mention.complaint_score, mention.churn = 0.0, False
    return mentions


def timeline(db: Database) -> list[tuple[int, str, str | None]]:
    """(case id, event, external id of its post) in the order the timeline shows them."""
    with db.session() as session:
        ids = {
            row_id: external
            for row_id, external in session.execute(select(MentionRow.id, MentionRow.external_id))
        }
        events = session.scalars(select(CaseEventRow).order_by(CaseEventRow.at, CaseEventRow.id))
        return [(e.case_id, e.kind, ids.get(e.mention_id) if e.mention_id else None) for e in events]


def test_one_batch_with_two_posts_of_a_new_author_opens_one_case(db: Database, pipeline: Pipeline) -> None:
    batch = [
        post("1", "Bouygues Telecom en panne"),
        post("2", "Bouygues Telecom, je vais résilier"),  # the same author, later in the batch
        post("3", "Bouygues Telecom en panne", author="blog.example/Bob"),
    ]
    with db.session() as session:
        result = pipeline.ingest(session, batch, source="blogs", now=NOW)
    # Anne's case opens on her first post, her second escalates it (an alert each); Bob's opens.
    assert (result.flags, result.cases_opened, result.alerts_queued) == (3, 2, 3)
    with db.session() as session:
        anne, bob = session.scalars(select(CaseRow).order_by(CaseRow.id))
        assert (anne.author_key, anne.severity, anne.status) == ("blog.example/Anne", "high", "new")
        assert (bob.author_key, bob.severity) == ("blog.example/Bob", "low")
        flags = {f.mention_id: f.case_id for f in session.scalars(select(FlagRow))}
        assert sorted(flags.values()) == [anne.id, anne.id, bob.id]
        alerts = [(a.kind, a.case_id) for a in session.scalars(select(OutboxRow).order_by(OutboxRow.id))]
        assert alerts == [("flag", anne.id), ("flag", anne.id), ("flag", bob.id)]
    assert timeline(db) == [(anne.id, "opened", "1"), (anne.id, "escalated", "2"), (bob.id, "opened", "3")]


def test_a_post_matching_two_rules_opens_with_the_higher_one_and_alerts_once(
    db: Database, pipeline: Pipeline
) -> None:
    with db.session() as session:
        result = pipeline.ingest(
            session, [post("1", "Bouygues Telecom en panne, je vais résilier")], source="blogs", now=NOW
        )
    assert (result.flags, result.cases_opened, result.alerts_queued) == (2, 1, 1)
    (case_id,) = {c for c, _, _ in timeline(db)}
    assert timeline(db) == [(case_id, "opened", "1"), (case_id, "flagged", "1")]


def test_a_rule_in_its_cooldown_flags_without_alerting(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    rules = [{**RULES[0], "cooldown": "1h"}, RULES[1]]
    pipeline = Pipeline(make_settings(rules=rules, channels=CHANNELS), enrichers=[scored])
    with db.session() as session:
        first = pipeline.ingest(
            session, [post("1", "Bouygues Telecom, je vais résilier")], source="blogs", now=NOW
        )
    assert (first.flags, first.alerts_queued) == (1, 1)
    with db.session() as session:
        (case,) = session.scalars(select(CaseRow))
        case.status = "resolved"  # the support team closed it
    later = NOW + timedelta(minutes=20)
    batch = [
        post("2", "Bouygues Telecom: je quitte !"),  # reopens Anne's case: churn again, within 1 h
        post("3", "Bouygues Telecom, je vais résilier", author="blog.example/Bob"),  # no cooldown for Bob
    ]
    with db.session() as session:
        result = pipeline.ingest(session, batch, source="blogs", now=later)
    assert (result.flags, result.cases_opened, result.alerts_queued) == (2, 2, 1)
    with db.session() as session:
        flags = {
            flag.mention_id: flag
            for flag in session.scalars(select(FlagRow).where(FlagRow.created_at == later))
        }
        ids = {
            external: row_id
            for external, row_id in session.execute(select(MentionRow.external_id, MentionRow.id))
        }
        cooled, bobs = flags[ids["2"]], flags[ids["3"]]
        assert cooled.explanation["cooldown"] == "no alert: this rule flagged the same author within 1h"
        assert "cooldown" not in bobs.explanation
        alerted = set(session.scalars(select(OutboxRow.flag_id)))
        assert cooled.id not in alerted and bobs.id in alerted
    assert (1, "reopened", "2") in timeline(db)


def test_a_batch_mixing_complaints_follow_ups_and_replies(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    channels = {"ops": {**CHANNELS["ops"], "notify_resolved": True}}
    pipeline = Pipeline(make_settings(rules=RULES, channels=channels), enrichers=[scored])
    batch = [
        post("1", "Bouygues Telecom en panne depuis hier", author="x:1", conversation_id="c1"),
        post("2", "Bouygues Telecom: ça remarche, merci !", author="x:1"),  # her happy follow-up
        post("3", "@bouyguestelecom pareil ici", author="x:2", conversation_id="c1"),  # a reply
        post(
            "4",
            "Bouygues Telecom: nous regardons",
            author="x:9",
            author_handle="bouyguestelecom",
            conversation_id="c1",
        ),
        post("5", "Bouygues Telecom: rien à voir", author="x:3"),  # no case, no conversation
    ]
    with db.session() as session:
        result = pipeline.ingest(session, batch, source="x", now=NOW)
    assert (result.stored, result.flags, result.cases_opened, result.alerts_queued) == (5, 1, 1, 1)
    with db.session() as session:
        (case,) = session.scalars(select(CaseRow))
        assert (case.status, case.hint, case.updated_at) == ("new", "customer seems satisfied", NOW)
        notices = list(session.scalars(select(OutboxRow).where(OutboxRow.kind == "resolution-suggested")))
        hint_id = session.scalar(select(CaseEventRow.id).where(CaseEventRow.kind == "hint"))
        assert [(n.event_key, n.case_id) for n in notices] == [(f"case-event:{hint_id}", case.id)]
    assert timeline(db) == [
        (case.id, "opened", "1"),
        (case.id, "mention", "2"),
        (case.id, "hint", "2"),
        (case.id, "conversation", "3"),
        (case.id, "brand-reply", "4"),
    ]


def test_auto_resolve_resolves_once_when_two_happy_posts_come_in_one_batch(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    channels = {"ops": {**CHANNELS["ops"], "notify_resolved": True}}
    pipeline = Pipeline(make_settings(rules=RULES, channels=channels, auto_resolve=True), enrichers=[scored])
    with db.session() as session:
        pipeline.ingest(session, [post("1", "Bouygues Telecom en panne")], source="blogs", now=NOW)
    later = NOW + timedelta(hours=1)
    batch = [post("2", "Bouygues Telecom remarche, merci"), post("3", "Encore merci Bouygues Telecom")]
    with db.session() as session:
        pipeline.ingest(session, batch, source="blogs", now=later)
    with db.session() as session:
        (case,) = session.scalars(select(CaseRow))
        assert (case.status, case.resolved_at, case.updated_at) == ("resolved", later, later)
        (notice,) = session.scalars(select(OutboxRow).where(OutboxRow.kind == "resolved"))
        resolved = session.scalar(select(CaseEventRow).where(CaseEventRow.kind == "resolved"))
        assert resolved is not None and (resolved.actor, notice.event_key) == (
            "monitor",
            f"case-event:{resolved.id}",
        )
    # The second post came after the case was resolved: it joins nothing, as in a later batch.
    assert [kind for _, kind, _ in timeline(db)] == ["opened", "mention", "hint", "resolved"]


def test_scores_of_mixed_number_types_are_stored(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    """A batch's values are written column by column: an int among floats, a NumPy number
    (what an analysis may hand back) must store as they did one row at a time."""
    import numpy as np

    def mixed(mentions: list[Mention]) -> list[Mention]:
        for n, mention in enumerate(mentions):
            mention.sentiment = [0, 0.5, np.float64(-0.25)][n]  # type: ignore[assignment]
            mention.complaint_score = [np.float32(0.75), None, 1][n]  # type: ignore[assignment]
            mention.author_followers = [np.int64(12), 7, None][n]  # type: ignore[assignment]
        return mentions

    pipeline = Pipeline(make_settings(rules=RULES, channels=CHANNELS), enrichers=[mixed])
    batch = [post(str(n), f"Bouygues Telecom en panne {n}", author=f"x:{n}") for n in range(3)]
    with db.session() as session:
        result = pipeline.ingest(session, batch, source="x", now=NOW)
    assert (result.stored, result.flags) == (3, 3)
    with db.session() as session:
        stored = {m["external_id"]: m for m in queries.list_mentions(session)}
    assert [stored[str(n)]["sentiment"] for n in range(3)] == [0.0, 0.5, -0.25]
    assert [stored[str(n)]["complaint_score"] for n in range(3)] == [0.75, None, 1.0]
    assert [stored[str(n)]["author_followers"] for n in range(3)] == [12, 7, None]


def _refuse_inserts(db: Database, table: str) -> None:
    """A trigger that makes the database itself refuse every INSERT into `table`."""
    with db.engine.begin() as connection:
        if db.is_sqlite:
            connection.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, '{table} refused'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN RAISE EXCEPTION '{table} refused'; END $$"
            )
            connection.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()"
            )


@pytest.mark.parametrize("table", ["case_events", "outbox", "source_state"])
def test_a_refused_last_write_fails_the_whole_batch_and_it_is_stored_on_retry(
    db: Database, pipeline: Pipeline, table: str
) -> None:
    """The batch's last writes go out together (PostgreSQL's pipeline mode): the database
    refusing any of them fails the batch as a whole, with its error, and nothing of it stays."""
    batch = [post("1", "Bouygues Telecom en panne, je vais résilier")]
    _refuse_inserts(db, table)
    with pytest.raises(StorageError, match=f"{table} refused"), db.session() as session:
        pipeline.ingest(session, batch, source="blogs", stream="s", cursor={"etag": "new"}, now=NOW)
    assert counts(db) == {"mentions": 0, "flags": 0, "cases": 0, "case_events": 0, "outbox": 0}
    with db.session() as session:
        assert state.load_cursor(session, "blogs", "s") == {}
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER refuse" + ("" if db.is_sqlite else f" ON {table}"))
    for mention in batch:
        mention.id = None  # assigned by the insert that was rolled back
    with db.session() as session:
        result = pipeline.ingest(session, batch, source="blogs", stream="s", cursor={"etag": "new"}, now=NOW)
    assert (result.stored, result.flags, result.cases_opened, result.alerts_queued) == (1, 2, 1, 1)
    with db.session() as session:
        assert state.load_cursor(session, "blogs", "s") == {"etag": "new"}


@pytest.mark.parametrize("db_url", [POSTGRES], indirect=True)
def test_a_connection_lost_during_the_last_writes_fails_the_batch_and_the_next_one_reconnects(
    db: Database, pipeline: Pipeline
) -> None:
    """The server ends the connection while the batch's last writes are in flight (a trigger that
    terminates its own backend): the batch fails as a database error, nothing of it stays, and
    the same `Database` stores it on the next try over a new connection."""
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE FUNCTION hang_up() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$"
        )
        connection.exec_driver_sql(
            "CREATE TRIGGER hang_up BEFORE INSERT ON source_state FOR EACH ROW EXECUTE FUNCTION hang_up()"
        )
    batch = [post("1", "Bouygues Telecom en panne, je vais résilier")]
    with pytest.raises(StorageError, match="database error"), db.session() as session:
        pipeline.ingest(session, batch, source="blogs", stream="s", cursor={"etag": "new"}, now=NOW)
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER hang_up ON source_state")
    assert counts(db) == {"mentions": 0, "flags": 0, "cases": 0, "case_events": 0, "outbox": 0}
    for mention in batch:
        mention.id = None
    with db.session() as session:
        result = pipeline.ingest(session, batch, source="blogs", stream="s", cursor={"etag": "new"}, now=NOW)
    assert (result.stored, result.alerts_queued) == (1, 1)
    with db.session() as session:
        assert state.load_cursor(session, "blogs", "s") == {"etag": "new"}


def test_a_batch_costs_a_few_statements_whatever_its_size(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    """100 posts by 50 authors, flagged or following up: about ten statements per batch (reads,
    one INSERT per table, one UPDATE of the cases, the cursor), not one per post or flag."""
    from sqlalchemy import event

    channels = {"ops": {**CHANNELS["ops"], "notify_resolved": True}}
    pipeline = Pipeline(make_settings(rules=RULES, channels=channels), enrichers=[scored])
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    for step, now in enumerate((NOW, NOW + timedelta(minutes=5))):
        batch = [
            post(
                f"{step}-{n}",
                "Bouygues Telecom merci" if n % 3 == 0 else "Bouygues Telecom en panne, je vais résilier",
                author=f"x:{n % 50}",
            )
            for n in range(100)
        ]
        statements.clear()
        with db.session() as session:
            result = pipeline.ingest(session, batch, source="x", stream="search", cursor={"n": step}, now=now)
        assert (
            result.stored == 100 and result.flags > 100 and result.alerts_queued == (50 if step == 0 else 0)
        )
        assert len(statements) <= 12, "\n".join(s.split("\n")[0][:80] for s in statements)
    event.remove(db.engine, "before_cursor_execute", count)
