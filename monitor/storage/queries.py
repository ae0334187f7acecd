"""Reads and writes of mentions and flags, shared by the pipeline, the CLI and the report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import chain
from operator import attrgetter
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from monitor.errors import StorageError
from monitor.mention import Mention
from monitor.storage.tables import FLAGS, MENTIONS, CaseRow, FlagRow, MentionRow, UTCDateTime

_CHUNK = 500
# Bound values per statement: SQLite allows 32,766, PostgreSQL 65,535.
_MAX_PARAMETERS = 30_000
MENTION_COLUMNS = [
    "source",
    "external_id",
    "url",
    "title",
    "text",
    "author_id",
    "author_name",
    "author_handle",
    "author_followers",
    "author_is_brand",
    "lang",
    "published_at",
    "collected_at",
    "conversation_id",
    "brand",
    "sentiment",
    "complaint_score",
    "churn",
]
FLAG_COLUMNS = ("mention_id", "case_id", "rule", "severity", "priority", "explanation", "created_at")


# The ids bound as one value (a JSON list, an array), one index probe each. On PostgreSQL
# `external_id IN (…)` would read every mention of the source at each batch in a table never
# analysed yet (a new database, its first minutes); a hundred-item expanding IN also cost
# SQLAlchemy more than SQLite's lookups. Sent as the driver's SQL (`by_dialect`), the array in
# binary (`%b`).
_KNOWN = {
    "sqlite": "SELECT external_id FROM mentions"
    " WHERE source = ? AND external_id IN (SELECT value FROM json_each(?))",
    "postgresql": "SELECT wanted.id FROM unnest(CAST(%b AS VARCHAR[])) AS wanted(id) CROSS JOIN LATERAL"
    " (SELECT 1 FROM mentions WHERE source = %s AND external_id = wanted.id LIMIT 1) AS hit",
}


def by_dialect(
    session: Session, statements: dict[str, str], arguments: dict[str, tuple[Any, ...]]
) -> Iterable[Sequence[Any]]:
    """Run the driver SQL written for the session's database (`statements` and `arguments` by
    dialect name: `?` placeholders for SQLite, `%s` and `%b` (binary) for psycopg).

    For the ingest path's fixed reads: no SQLAlchemy compilation or ORM step per call, and on
    PostgreSQL lists go as binary arrays, which psycopg neither quotes nor escapes.
    """
    connection = session.connection()
    name = connection.dialect.name
    return connection.exec_driver_sql(statements[name], arguments[name])


def known_external_ids(session: Session, source: str, external_ids: Sequence[str]) -> set[str]:
    """Which of these ids are already stored, so the pipeline analyses only new posts."""
    found: set[str] = set()
    for start in range(0, len(external_ids), _CHUNK):
        chunk = [str(i) for i in external_ids[start : start + _CHUNK]]
        arguments = {"sqlite": (source, json.dumps(chunk)), "postgresql": (chunk, source)}
        found.update(row[0] for row in by_dialect(session, _KNOWN, arguments))
    return found


@contextmanager
def pipelined(session: Session, enabled: bool = True) -> Iterator[None]:
    """Statements that return no rows, sent one after another without waiting for each: on
    PostgreSQL, psycopg's pipeline mode (the server runs one while the next is being prepared,
    and the block waits once, at its end); elsewhere, or not `enabled`, as usual.

    Nothing in the block may read a result (a RETURNING, a SELECT): in pipeline mode there is
    none yet. An error of any statement is raised when the block ends, as SQLAlchemy's error
    for it, and fails the transaction as it would have without the pipeline.
    """
    connection = session.connection()
    if not enabled or connection.dialect.name != "postgresql":
        yield
        return
    import psycopg

    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        with driver.pipeline():
            yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc


def insert_mentions(session: Session, mentions: Sequence[Mention]) -> list[Mention]:
    """Insert, skipping any (source, external_id) already stored; return the stored ones with ids,
    in the order given.

    ON CONFLICT DO NOTHING makes the write idempotent even when two nodes race on one post.
    """
    if not mentions:
        return []
    by_key = {(m.source, m.external_id): m for m in mentions}
    values = attrgetter(*MENTION_COLUMNS)
    returned = insert_values(
        session,
        MENTIONS,
        MENTION_COLUMNS,
        [values(m) for m in by_key.values()],
        returning=("id", "source", "external_id"),
        skip_conflicts=True,
    )
    ids = {(source, external_id): row_id for row_id, source, external_id in returned}
    stored = []
    for key, mention in by_key.items():
        if key in ids:
            mention.id = ids[key]
            stored.append(mention)
    return stored


def insert_values(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: Sequence[str] = (),
    skip_conflicts: bool = False,
) -> list[Any]:
    """INSERT rows (value tuples in `columns` order) in one statement (per chunk on SQLite);
    the RETURNING columns of the rows written, as the driver gives them.

    The values go through the columns' own SQLAlchemy types (bind processors), as with
    `session.execute(table.insert(), rows)`; what is left out is its bookkeeping per row, which
    cost more than SQLite's own work for the small rows of the ingest path. SQLite gets a
    multi-row VALUES; PostgreSQL one array per column (`unnest`): a VALUES of 1,800 parameters
    is planned anew at each batch and cost it twice the rows' own work. `skip_conflicts` skips a
    row that breaks a unique constraint (ON CONFLICT DO NOTHING): it is not returned.
    """
    if not rows:
        return []
    connection = session.connection()
    dialect = connection.dialect
    sql = _insert_sql(table, tuple(columns), tuple(returning), skip_conflicts, dialect)
    values = _bound_columns(tuple(table.c[c].type for c in columns), rows, dialect)
    if dialect.name == "postgresql":
        result = connection.exec_driver_sql(sql, tuple(values))
        return list(result.all()) if returning else []
    return _sqlite_chunks(connection, sql, values, returning=bool(returning))


@lru_cache(maxsize=64)
def _insert_sql(
    table: Table, columns: tuple[str, ...], returning: tuple[str, ...], skip_conflicts: bool, dialect: Dialect
) -> str:
    """`insert_values`'s statement, written once per table and columns. SQLite: with `{values}`
    for the chunk's VALUES rows."""
    _check(dialect)
    quote = dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(table.c[c].name) for c in columns)}) "
    tail = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
    if returning:
        tail += f" RETURNING {', '.join(quote(table.c[name].name) for name in returning)}"
    if dialect.name == "sqlite":
        return head + "VALUES {values}" + tail
    # In the rows' order (WITH ORDINALITY): ids, and so a case's timeline, follow it.
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    arrays = _arrays([table.c[c].type for c in columns], dialect)
    return f"{head}SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS v({names}, n) ORDER BY n{tail}"


def update_values(
    session: Session,
    table: Table,
    columns: Sequence[tuple[str, TypeEngine[Any]]],
    rows: Sequence[Sequence[Any]],
    *,
    assignments: str,
    where: str,
) -> None:
    """UPDATE `table` from rows (value tuples of the named, typed `columns`) in one statement
    (per chunk on SQLite): `WITH v(columns) AS (the rows) UPDATE table SET assignments FROM v
    WHERE where`, the SQL of `assignments` and `where` reading the rows as `v.<column>`.

    The values are bound as `insert_values` binds them (SQLite: a multi-row VALUES; PostgreSQL:
    one binary array per column), so the statement's text does not depend on the number of
    rows and PostgreSQL prepares it once per connection.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    sql = _update_sql(table, tuple(columns), assignments, where, dialect)
    values = _bound_columns(tuple(type_ for _, type_ in columns), rows, dialect)
    if dialect.name == "postgresql":
        connection.exec_driver_sql(sql, tuple(values))
    else:
        _sqlite_chunks(connection, sql, values, returning=False)


@lru_cache(maxsize=64)
def _update_sql(
    table: Table,
    columns: tuple[tuple[str, TypeEngine[Any]], ...],
    assignments: str,
    where: str,
    dialect: Dialect,
) -> str:
    """`update_values`'s statement, written once per table, columns and assignments. SQLite:
    with `{values}` for the chunk's VALUES rows."""
    _check(dialect)
    names = ", ".join(name for name, _ in columns)
    rows = "VALUES {values}"
    if dialect.name == "postgresql":
        rows = f"SELECT * FROM unnest({_arrays([type_ for _, type_ in columns], dialect)})"
    quoted = dialect.identifier_preparer.quote(table.name)
    return f"WITH v({names}) AS ({rows}) UPDATE {quoted} SET {assignments} FROM v WHERE {where}"


def _check(dialect: Dialect) -> None:
    if dialect.name not in ("sqlite", "postgresql"):  # pragma: no cover - the two supported backends
        raise StorageError(f"bulk statements do not support {dialect.name}")


def _arrays(types: Sequence[TypeEngine[Any]], dialect: Dialect) -> str:
    """One bound array per column, sent in binary (`%b`): in text form psycopg quotes and escapes
    every element with a regular expression, which cost more than the insert itself for the
    flags' JSON explanations."""
    return ", ".join(f"CAST(%b AS {_array_type(type_, dialect)})" for type_ in types)


def _sqlite_chunks(
    connection: Connection, sql: str, values: list[list[Any]], *, returning: bool
) -> list[Any]:
    """Run `sql` (with `{values}` for its rows) once per chunk of rows that SQLite can bind."""
    marks = "(" + ", ".join("?" for _ in values) + ")"
    size = max(1, _MAX_PARAMETERS // len(values))
    found: list[Any] = []
    for start in range(0, len(values[0]), size):
        chunk = [column[start : start + size] for column in values]
        result = connection.exec_driver_sql(
            sql.replace("{values}", ", ".join([marks] * len(chunk[0]))),
            tuple(chain.from_iterable(zip(*chunk, strict=True))),
        )
        if returning:
            found.extend(result.all())
    return found


def _bound_columns(
    types: tuple[TypeEngine[Any], ...], rows: Sequence[Sequence[Any]], dialect: Dialect
) -> list[list[Any]]:
    """The rows' values column by column, as the driver takes them: through each column
    type's bind processor (a timestamp column's, once per distinct value: a batch has few).

    Numbers are made plain `int` and `float` (and, for PostgreSQL's arrays, strings plain
    `str`): sqlite3 would store a NumPy integer as a blob, and psycopg refuses a list that
    mixes types (an int among floats).
    """
    bound = [list(values) for values in zip(*rows, strict=True)]
    for i, (process, kind, once) in enumerate(_binders(types, dialect)):
        if process is None:
            if kind is not None:
                bound[i] = [None if v is None else kind(v) for v in bound[i]]
        elif once:
            converted: dict[Any, Any] = {}
            bound[i] = [
                converted[v] if v in converted else converted.setdefault(v, process(v)) for v in bound[i]
            ]
        else:
            bound[i] = [process(v) for v in bound[i]]
    return bound


@lru_cache(maxsize=256)
def _binders(
    types: tuple[TypeEngine[Any], ...], dialect: Dialect
) -> list[tuple[Callable[[Any], Any] | None, type | None, bool]]:
    """Per type: its bind processor, else the plain type to make values (or None); whether
    to process each distinct value once (timestamps)."""
    binders: list[tuple[Callable[[Any], Any] | None, type | None, bool]] = []
    for type_ in types:
        process = type_.dialect_impl(dialect).bind_processor(dialect)
        kind = None
        if process is None:
            python_type = type_.python_type
            if python_type in (int, float) or (python_type is str and dialect.name == "postgresql"):
                kind = python_type
        binders.append((process, kind, isinstance(type_, UTCDateTime)))
    return binders


def _array_type(type_: TypeEngine[Any], dialect: Dialect) -> str:
    """`VARCHAR[]` for a VARCHAR(64) column: a cast to VARCHAR(64) would cut a longer value
    silently, where the insert itself refuses it."""
    return re.sub(r"\(.*?\)", "", type_.compile(dialect=dialect)) + "[]"


def insert_flags(
    session: Session, rows: Sequence[Sequence[Any]], *, ids: bool = True
) -> dict[tuple[int, str], int]:
    """Insert a batch's flags (`FLAG_COLUMNS` tuples) in one statement; their ids by
    (mention id, rule), when `ids`.

    The ids come back with the rows' unique key, so nothing relies on the order of RETURNING.
    """
    returning = ("id", "mention_id", "rule") if ids else ()
    returned = insert_values(session, FLAGS, FLAG_COLUMNS, rows, returning=returning)
    return {(mention_id, rule): flag_id for flag_id, mention_id, rule in returned}


def latest_flags(
    session: Session, keys: Iterable[tuple[str, str, str]], since: datetime
) -> dict[tuple[str, str, str], datetime]:
    """When each (rule, brand, author id) was last flagged after `since`, in one query: the
    rules' cooldowns for a whole batch."""
    wanted = set(keys)
    if not wanted:
        return {}
    query = (
        select(FlagRow.rule, MentionRow.brand, MentionRow.author_id, func.max(FlagRow.created_at))
        .join(MentionRow, MentionRow.id == FlagRow.mention_id)
        .where(
            FlagRow.rule.in_(list({rule for rule, _, _ in wanted})),
            FlagRow.created_at > since,
            MentionRow.brand.in_(list({brand for _, brand, _ in wanted})),
            MentionRow.author_id.in_(list({author for _, _, author in wanted})),
        )
        .group_by(FlagRow.rule, MentionRow.brand, MentionRow.author_id)
    )
    latest: dict[tuple[str, str, str], datetime] = {}
    for rule, brand, author, at in session.execute(query):
        key = (rule, brand, str(author))
        if key in wanted and at is not None:
            latest[key] = at
    return latest


@dataclass(frozen=True, slots=True)
class Filters:
    brand: str | None = None
    source: str | None = None
    since: datetime | None = None
    severity: str | None = None
    status: str | None = None
    rule: str | None = None
    limit: int | None = None


def _mention_dict(row: MentionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "external_id": row.external_id,
        "url": row.url,
        "title": row.title,
        "author": row.author_name or row.author_handle or row.author_id,
        "author_id": row.author_id,
        "author_followers": row.author_followers,
        "author_is_brand": row.author_is_brand,
        "text": row.text,
        "lang": row.lang,
        "published_at": row.published_at,
        "collected_at": row.collected_at,
        "brand": row.brand,
        "sentiment": row.sentiment,
        "complaint_score": row.complaint_score,
        "churn": row.churn,
    }


def _where_mention(query: Any, filters: Filters) -> Any:
    if filters.brand:
        query = query.where(MentionRow.brand == filters.brand)
    if filters.source:
        query = query.where(MentionRow.source == filters.source)
    return query


def where_flag(query: Any, filters: Filters, *, joined: bool = False) -> Any:
    """The report's filters on a query over flags (the report's rows and its summary counts).

    Unless `joined`, mentions and cases are joined only when a filter needs them.
    """
    if filters.brand or filters.source:
        if not joined:
            query = query.join(MentionRow, FlagRow.mention_id == MentionRow.id)
        query = _where_mention(query, filters)
    if filters.status:
        if not joined:
            query = query.join(CaseRow, FlagRow.case_id == CaseRow.id)
        query = query.where(CaseRow.status == filters.status)
    if filters.since:
        query = query.where(FlagRow.created_at >= filters.since)
    if filters.severity:
        query = query.where(FlagRow.severity == filters.severity)
    if filters.rule:
        query = query.where(FlagRow.rule == filters.rule)
    return query


def list_mentions(session: Session, filters: Filters = Filters()) -> list[dict[str, Any]]:
    """Stored mentions, newest first."""
    query = _where_mention(select(MentionRow), filters)
    if filters.since:
        query = query.where(MentionRow.collected_at >= filters.since)
    query = query.order_by(MentionRow.published_at.desc().nulls_last(), MentionRow.id.desc())
    if filters.limit:
        query = query.limit(filters.limit)
    return [_mention_dict(row) for row in session.scalars(query)]


def flagged_posts(session: Session, filters: Filters = Filters()) -> list[dict[str, Any]]:
    """Flagged posts with their case, most urgent first (priority, then newest)."""
    query = select(FlagRow, MentionRow, CaseRow).join(MentionRow, FlagRow.mention_id == MentionRow.id)
    query = where_flag(query.outerjoin(CaseRow, FlagRow.case_id == CaseRow.id), filters, joined=True)
    query = query.order_by(FlagRow.priority.desc(), MentionRow.published_at.desc().nulls_last(), FlagRow.id)
    if filters.limit:
        query = query.limit(filters.limit)
    posts = []
    for flag, mention, case in session.execute(query):
        post = _mention_dict(mention)
        post.pop("id")
        posts.append(
            {
                "flag_id": flag.id,
                "case_id": case.id if case else None,
                "rule": flag.rule,
                "severity": flag.severity,
                "priority": flag.priority,
                "status": case.status if case else None,
                "explanation": flag.explanation,
                "mention_id": mention.id,
                **post,
                "flagged_at": flag.created_at,
            }
        )
    return posts


def count_mentions(session: Session, sources: Iterable[str] | None = None) -> int:
    query = select(func.count()).select_from(MentionRow)
    if sources is not None:
        query = query.where(MentionRow.source.in_(list(sources)))
    return int(session.scalar(query) or 0)
