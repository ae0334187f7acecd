"""Migrations that shape the schema for speed: what they build, and that they run both ways."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from monitor.storage.db import MIGRATIONS, Database


def test_cases_are_indexed_by_author_for_reopening(db: Database) -> None:
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(db.engine).get_indexes("cases")}
    assert indexes["ix_cases_author"] == ["brand", "author_key"]


def _day_index(path: Path) -> list[str | None]:
    """The key columns of SQLite's day index (None: the day expression)."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("PRAGMA index_xinfo(ix_mentions_day)").fetchall()
    return [name for _, _, name, _, _, key in rows if key]


def test_sqlite_day_index_appends_new_mentions_and_migrates_both_ways(tmp_path: Path) -> None:
    """The report's day index holds `id` before `sentiment`, so a new mention goes to the end of
    its day's entries (a batch writes a page or two) instead of anywhere in them."""
    path = tmp_path / "monitor.db"
    database = Database(f"sqlite:///{path}")
    assert _day_index(path) == [None, "brand", "source", "id", "sentiment", "collected_at"]
    with database.engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")
    assert _day_index(path) == [None, "brand", "source", "sentiment", "collected_at"]
    assert "ix_cases_author" not in {ix["name"] for ix in inspect(database.engine).get_indexes("cases")}
    database.upgrade()
    assert _day_index(path) == [None, "brand", "source", "id", "sentiment", "collected_at"]
    assert database.current_revision() == database.head_revision() == "0007"
    database.dispose()
