"""Storage on SQLite and PostgreSQL: migrations, idempotent writes, timezone-aware times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Boolean, inspect, select

from monitor.mention import Mention
from monitor.storage import queries, state
from monitor.storage.db import Database
from monitor.storage.tables import CASES, FLAGS, CaseRow, MentionRow


def _mention(external_id: str, **fields: object) -> Mention:
    base: dict[str, object] = {
        "source": "blogs",
        "external_id": external_id,
        "text": f"post {external_id}",
        "brand": "Bouygues Telecom",
        "collected_at": datetime(2026, 11, 1, tzinfo=UTC),
    }
    base.update(fields)
    return Mention(**base)  # type: ignore[arg-type]


def test_first_start_creates_the_schema_at_head(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {
        "mentions",
        "flags",
        "cases",
        "case_events",
        "outbox",
        "source_state",
        "alembic_version",
    } <= tables
    assert db.current_revision() == db.head_revision() is not None


def test_reopening_a_migrated_database_keeps_its_data(db_url: str) -> None:
    first = Database(db_url)
    with first.session() as session:
        queries.insert_mentions(session, [_mention("a")])
    first.dispose()
    second = Database(db_url)
    with second.session() as session:
        assert queries.count_mentions(session) == 1
    second.dispose()


def test_insert_is_idempotent_on_source_and_external_id(db: Database) -> None:
    with db.session() as session:
        stored = queries.insert_mentions(session, [_mention("a"), _mention("b"), _mention("a")])
        assert sorted(m.external_id for m in stored) == ["a", "b"]
        assert all(m.id for m in stored)
    with db.session() as session:
        again = queries.insert_mentions(session, [_mention("a"), _mention("c")])
        assert [m.external_id for m in again] == ["c"]
        # The same external id from another source is another mention.
        other = queries.insert_mentions(session, [_mention("a", source="x")])
        assert len(other) == 1
    with db.session() as session:
        assert queries.count_mentions(session) == 4
        assert queries.known_external_ids(session, "blogs", ["a", "b", "z"]) == {"a", "b"}


def test_times_come_back_timezone_aware_utc(db: Database) -> None:
    paris = timezone(timedelta(hours=2))
    with db.session() as session:
        queries.insert_mentions(
            session, [_mention("a", published_at=datetime(2010, 8, 4, 9, 12, tzinfo=paris))]
        )
    with db.session() as session:
        row = session.scalar(select(MentionRow))
        assert row is not None
        assert row.published_at == datetime(2010, 8, 4, 7, 12, tzinfo=UTC)
        assert row.published_at.tzinfo is not None


def test_failed_transaction_stores_nothing(db: Database) -> None:
    try:
        with db.session() as session:
            queries.insert_mentions(session, [_mention("a")])
            state.record_success(session, "blogs", "http://feed", {"etag": '"1"'}, datetime.now(UTC), 1)
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    with db.session() as session:
        assert queries.count_mentions(session) == 0
        assert state.load_cursor(session, "blogs", "http://feed") == {}


def test_cursor_round_trip(db: Database) -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with db.session() as session:
        state.record_success(session, "blogs", "http://feed", {"etag": '"abc"', "last_modified": "x"}, now, 3)
    with db.session() as session:
        assert state.load_cursor(session, "blogs", "http://feed") == {"etag": '"abc"', "last_modified": "x"}
        state.record_failure(session, "blogs", "http://feed", "HTTP 500", now)
    with db.session() as session:
        (row,) = state.all_states(session)
        assert row.cursor == {"etag": '"abc"', "last_modified": "x"}
        assert row.last_error == "HTTP 500" and row.consecutive_errors == 1 and row.mentions_total == 3


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    from pathlib import Path

    from sqlalchemy import text

    database = Database(f"sqlite:///{Path(str(tmp_path)) / 'wal.db'}")
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    database.dispose()


# The ingest path's bulk statements bind whole columns: on PostgreSQL one binary array each,
# on SQLite a multi-row VALUES. Whatever a value holds must come back as it went in.
AWKWARD = ["plain", '"quoted"', "back\\slash", "{braces},commas", "NULL", "", " spaced ", "é’😀", "a\nb"]


def test_bulk_insert_and_update_keep_every_value_as_it_was(db: Database) -> None:
    now = datetime(2026, 11, 1, 12, 30, 15, 123456, tzinfo=UTC)
    mentions = [
        _mention(f"m{n}", text=text, title=None if n % 2 else text, author_followers=n or None)
        for n, text in enumerate(AWKWARD)
    ]
    with db.session() as session:
        stored = queries.insert_mentions(session, mentions)
        explanations = [
            {"rule": "r", "matched": [text, {"nested": text}], "n": n} for n, text in enumerate(AWKWARD)
        ]
        queries.insert_flags(
            session,
            [(m.id, None, f"rule{n}", "low", 0.5 + n, explanations[n], now) for n, m in enumerate(stored)],
        )
        (case_id,), (other_id,) = queries.insert_values(
            session,
            CASES,
            ("brand", "author_key", "status", "severity", "priority", "opened_at", "updated_at"),
            [("Bouygues Telecom", key, "new", "low", 1.0, now, now) for key in ("x:1", "x:2")],
            returning=("id",),
        )
        columns = (("id", CASES.c.id.type), ("hint", CASES.c.hint.type), ("at", CASES.c.updated_at.type))
        columns += (("flag", Boolean()),)
        queries.update_values(
            session,
            CASES,
            columns,
            [(case_id, AWKWARD[1], now + timedelta(hours=1), True)],
            assignments="hint = v.hint, updated_at = v.at,"
            " severity = CASE WHEN v.flag THEN 'high' ELSE severity END",
            where="cases.id = v.id",
        )
    with db.session() as session:
        rows = {m["external_id"]: m for m in queries.list_mentions(session)}
        assert [rows[f"m{n}"]["text"] for n in range(len(AWKWARD))] == AWKWARD
        assert [rows[f"m{n}"]["title"] for n in range(0, len(AWKWARD), 2)] == AWKWARD[::2]
        assert [rows[f"m{n}"]["author_followers"] for n in range(3)] == [None, 1, 2]
        flags = sorted(session.execute(select(FLAGS.c.rule, FLAGS.c.explanation, FLAGS.c.created_at)))
        assert [f.explanation for f in flags] == sorted(explanations, key=lambda e: f"rule{e['n']}")
        assert {f.created_at for f in flags} == {now}
        cases = {c.id: c for c in session.scalars(select(CaseRow))}
        assert (cases[case_id].hint, cases[case_id].updated_at, cases[case_id].severity) == (
            '"quoted"',
            now + timedelta(hours=1),
            "high",
        )
        assert (cases[other_id].hint, cases[other_id].updated_at, cases[other_id].severity) == (
            None,
            now,
            "low",
        )
