"""Mastodon source against recorded-shape API answers, served by `responses` (no network).

The payloads under tests/fixtures/mastodon are modelled on Mastodon 4's documented entities:
`search_statuses.json` is a /api/v2/search?type=statuses answer from mastodon.social,
`tag_timeline.json` the #BouyguesTelecom timeline of piaille.fr (one of its posts is a federated copy
of a mastodon.social post: same `uri`, another local id), `errors.json` the error answers.
Pagination tests build pages of statuses from the same shapes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from conftest import BRAND, FIXTURES
from pydantic import ValidationError
from sqlalchemy import select

from monitor.collector import Collector
from monitor.config import Settings, settings_from_dict
from monitor.errors import AccessRefusedError, FatalSourceError, RetriableSourceError, SourceError
from monitor.sources.mastodon import MastodonConfig, MastodonSource, default_terms
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow, SourceStateRow

HERE = FIXTURES / "mastodon"
SOCIAL = "https://mastodon.social"
PIAILLE = "https://piaille.fr"
SEARCH_URL = f"{SOCIAL}/api/v2/search"
TOKEN = "mst-Zk3q0d9-test-access-token-never-shown"
SEARCH = f"{SOCIAL} search:Bouygues Telecom"
OLD_ID = "113100000000000000"
MARIE_URI = "https://mastodon.social/users/marie_l/statuses/113200000000000010"


@cache
def _read(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def load(name: str) -> Any:
    """A fresh (mutable) copy of one fixture."""
    return copy.deepcopy(json.loads(_read(name)))


def make_status(
    status_id: int | str, text: str = "La box Bouygues Telecom redémarre encore"
) -> dict[str, Any]:
    """A public status of marie_l on mastodon.social with this id, naming the brand."""
    status = load("search_statuses.json")["statuses"][4]
    status.update(
        id=str(status_id),
        uri=f"https://mastodon.social/users/marie_l/statuses/{status_id}",
        url=f"https://mastodon.social/@marie_l/{status_id}",
        content=f"<p>{text} ({status_id})</p>",
    )
    return status


def page(first_id: int, count: int) -> list[dict[str, Any]]:
    """`count` statuses, newest first, from `first_id` down."""
    return [make_status(first_id - i) for i in range(count)]


def ids(statuses: list[dict[str, Any]]) -> list[str]:
    return [s["id"] for s in statuses]


def uris(statuses: list[dict[str, Any]]) -> list[str]:
    return [s["uri"] for s in statuses]


def params(call: Any) -> dict[str, str]:
    query = parse_qs(urlsplit(call.request.url).query, keep_blank_values=True)
    return {key: values[-1] for key, values in query.items()}


def sent(**expected: str | None) -> Callable[[Any], tuple[bool, str]]:
    """A `responses` matcher: these query parameters have these values (None: absent)."""

    def match(request: Any) -> tuple[bool, str]:
        query = parse_qs(urlsplit(request.url).query)
        got = {key: query.get(key, [None])[-1] for key in expected}
        return got == expected, f"{got} != {expected}"

    return match


def tag_url(instance: str, tag: str) -> str:
    return f"{instance}/api/v1/timelines/tag/{tag}"


def serve_search(
    rsps: responses.RequestsMock,
    statuses: list[dict[str, Any]],
    *,
    max_id: str | None = None,
    q: str = '"Bouygues Telecom"',
) -> None:
    body = {"accounts": [], "statuses": statuses, "hashtags": []}
    rsps.add(responses.GET, SEARCH_URL, json=body, match=[sent(q=q, max_id=max_id)])


def serve_tag(
    rsps: responses.RequestsMock,
    instance: str,
    tag: str,
    statuses: list[dict[str, Any]],
    *,
    max_id: str | None = None,
) -> None:
    rsps.add(responses.GET, tag_url(instance, tag), json=statuses, match=[sent(max_id=max_id)])


def serve_error(rsps: responses.RequestsMock, url: str, name: str) -> None:
    saved = load("errors.json")[name]
    rsps.add(responses.GET, url, json=saved["body"], status=saved["status"], headers=saved["headers"])


@pytest.fixture
def make_source(brands: tuple[Any, ...]) -> Iterator[Callable[..., MastodonSource]]:
    made: list[MastodonSource] = []

    def build(**overrides: Any) -> MastodonSource:
        raw = {"name": "masto", "instances": [SOCIAL], "access_token": TOKEN, **overrides}
        made.append(MastodonSource(MastodonConfig.model_validate(raw), brands))
        return made[-1]

    yield build
    for source in made:
        source.close()


class Clock:
    """A monotonic clock the test moves: the next poll comes minutes after the last."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def collector_for(settings: Settings, db: Database, clock: Clock | None = None) -> Collector:
    config = settings.sources[0]
    assert isinstance(config, MastodonConfig)
    source = MastodonSource(config, settings.brands, monotonic=clock or Clock())
    return Collector(settings, db, sources=[source])


def stored(db: Database) -> list[MentionRow]:
    with db.session() as session:
        rows = list(session.scalars(select(MentionRow).order_by(MentionRow.id)))
        session.expunge_all()
    return rows


def stream_state(db: Database, stream: str) -> SourceStateRow:
    with db.session() as session:
        row = session.scalar(
            select(SourceStateRow).where(SourceStateRow.source == "masto", SourceStateRow.stream == stream)
        )
        assert row is not None, stream
        session.expunge(row)
    return row


def seed_cursor(db: Database, stream: str, cursor: dict[str, Any]) -> None:
    with db.session() as session:
        state.record_success(session, "masto", stream, cursor, datetime(2024, 9, 1, tzinfo=UTC), 0)


# --- one page -> Mentions ---------------------------------------------------------------------


def test_a_search_page_becomes_mentions(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    statuses = load("search_statuses.json")["statuses"]
    reply, warned, private, bot, marie = statuses
    boost = make_status("113200000000000045")
    boost.update(content="", reblog=copy.deepcopy(marie))  # a boost of marie's post: not a mention
    statuses.insert(1, boost)
    serve_search(rsps, statuses)

    batches = list(make_source().fetch(SEARCH, {}))

    assert len(batches) == 1
    batch = batches[0]
    assert batch.stream == SEARCH
    assert batch.cursor == {"since_id": "113200000000000050"}
    by_uri = {m.external_id: m for m in batch.mentions}
    # The followers-only post and the boost are left out.
    assert list(by_uri) == uris([reply, warned, bot, marie])
    assert private["visibility"] == "private"

    answer = by_uri[reply["uri"]]
    assert answer.source == "masto"
    assert answer.url == "https://piaille.fr/@jdupont/113199998877766655"
    assert (
        answer.text
        == "@marie_l Pareil chez moi avec Bouygues Telecom, la fibre coupe tous les soirs vers 21h."
    )
    assert answer.author_handle == "jdupont@piaille.fr"
    assert answer.author_id == "mastodon:jdupont@piaille.fr"
    assert answer.author_name == "Jean Dupont"
    assert answer.author_followers == 45
    assert answer.lang == "fr"
    assert answer.published_at == datetime(2024, 9, 24, 18, 42, 11, tzinfo=UTC)
    assert answer.published_at is not None and answer.published_at.utcoffset() is not None
    assert answer.published_at.tzinfo == UTC
    # A reply joins its parent's thread: the same conversation id as marie's post.
    assert answer.conversation_id == "113200000000000010@mastodon.social"

    root = by_uri[marie["uri"]]
    assert root.text == (
        "Encore une panne de la box @bouyguestelecom depuis ce matin… #BouyguesTelecom\nTrois jours sans internet."
    )
    assert root.author_handle == "marie_l@mastodon.social"  # a local account gets the instance's host
    assert root.author_followers == 182
    assert root.conversation_id == answer.conversation_id
    assert root.url == "https://mastodon.social/@marie_l/113200000000000010"

    cw = by_uri[warned["uri"]]  # the content warning comes first, HTML entities decoded
    assert cw.text == (
        "Bouygues Telecom, service client\n\n"
        "Une heure d'attente au 1064 pour s'entendre dire de redémarrer la box.\nJe résilie."
    )
    assert cw.author_name == "Nadia B. :verified:"

    news = by_uri[bot["uri"]]
    assert news.text == "Bouygues Telecom's new fibre plan: https://www.example.com/offres/fibre-2024"
    assert news.lang is None and news.author_name is None and news.author_followers == 9876


def test_the_search_request_is_the_only_request_and_sends_no_since_filter(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    serve_search(rsps, [])

    source = make_source()
    assert len(rsps.calls) == 0  # building the source asks nothing (no version or instance probe)
    batches = list(source.fetch(SEARCH, {"since_id": OLD_ID}))

    assert [b.cursor for b in batches] == [{"since_id": OLD_ID}]
    assert len(rsps.calls) == 1
    # No min_id (Mastodon 4.2 turns it into a date filter that misses late federation), no resolve
    # nor offset (refused without login), one page of Mastodon's largest size.
    assert params(rsps.calls[0]) == {
        "q": '"Bouygues Telecom"',
        "type": "statuses",
        "limit": "40",
        "exclude_unreviewed": "1",
    }
    headers = rsps.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["User-Agent"].startswith("monitor/")


# --- streams ----------------------------------------------------------------------------------


def test_streams_one_search_per_term_on_the_token_instance_and_one_per_hashtag_and_instance(
    make_source: Callable[..., MastodonSource], brands: tuple[Any, ...]
) -> None:
    source = make_source(
        instances=[SOCIAL, PIAILLE], hashtags=["#BouyguesTelecom", "bouyguestelecom", "fibre"]
    )

    # "Bouygues Télécom" folds to "Bouygues Telecom": searched once. Handles are not searched.
    assert default_terms(brands) == ["Bouygues Telecom", "BouyguesTelecom"]
    assert source.streams() == [
        f"{SOCIAL} search:Bouygues Telecom",
        f"{SOCIAL} search:BouyguesTelecom",
        f"{SOCIAL} tag:BouyguesTelecom",
        f"{SOCIAL} tag:fibre",
        f"{PIAILLE} tag:BouyguesTelecom",
        f"{PIAILLE} tag:fibre",
    ]
    assert source.disabled_reason() is None


def test_a_query_replaces_the_brand_terms_and_no_token_means_no_search(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    source = make_source(query="bbox panne", hashtags=["bbox"])
    assert source.streams() == [f"{SOCIAL} search:bbox panne", f"{SOCIAL} tag:bbox"]
    serve_search(rsps, [], q="bbox panne")  # a configured query is sent as written
    assert [b.cursor for b in source.fetch(f"{SOCIAL} search:bbox panne", {})] == [{}]

    anonymous = make_source(access_token=None, hashtags=["bbox"])
    assert anonymous.streams() == [f"{SOCIAL} tag:bbox"]


# --- hashtag timelines, pagination and cursors --------------------------------------------------


def test_a_hashtag_timeline_sends_since_id_and_pages_back_with_max_id(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    first, last = page(113200000000000100, 40), page(113200000000000060, 7)
    serve_tag(rsps, PIAILLE, "bbox", first)
    serve_tag(rsps, PIAILLE, "bbox", last, max_id=first[-1]["id"])
    source = make_source(instances=[SOCIAL, PIAILLE], hashtags=["bbox"])

    batches = list(source.fetch(f"{PIAILLE} tag:bbox", {"since_id": OLD_ID}))

    assert [b.cursor for b in batches] == [
        {"since_id": OLD_ID, "newest_id": first[0]["id"], "max_id": first[-1]["id"]},
        {"since_id": first[0]["id"]},
    ]
    assert [[m.external_id for m in b.mentions] for b in batches] == [uris(first), uris(last)]
    assert [params(c) for c in rsps.calls] == [
        {"since_id": OLD_ID, "limit": "40"},
        {"since_id": OLD_ID, "max_id": first[-1]["id"], "limit": "40"},
    ]
    # The token belongs to mastodon.social: never sent to another instance.
    assert all("Authorization" not in c.request.headers for c in rsps.calls)


def test_search_pages_back_until_it_reaches_since_id_and_drops_what_is_not_newer(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    first = page(113200000000000100, 40)
    second = page(113200000000000060, 40)  # 60..21: 21..30 are at or below since_id
    since = "113200000000000030"
    serve_search(rsps, first)
    serve_search(rsps, second, max_id=first[-1]["id"])

    batches = list(make_source().fetch(SEARCH, {"since_id": since}))

    assert [b.cursor for b in batches] == [
        {"since_id": since, "newest_id": first[0]["id"], "max_id": first[-1]["id"]},
        {"since_id": first[0]["id"]},
    ]
    assert [len(b.mentions) for b in batches] == [40, 30]
    assert batches[1].mentions[-1].external_id.endswith("/113200000000000031")
    assert len(rsps.calls) == 2  # the page that reached since_id was the last one
    assert all("min_id" not in params(c) and "since_id" not in params(c) for c in rsps.calls)


def test_a_server_that_ignores_paging_does_not_loop(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    first = page(113200000000000100, 40)
    rsps.add(responses.GET, SEARCH_URL, json={"accounts": [], "statuses": first, "hashtags": []})

    batches = list(make_source().fetch(SEARCH, {"since_id": OLD_ID}))

    assert [len(b.mentions) for b in batches] == [40, 0]
    assert batches[-1].cursor == {"since_id": first[0]["id"]}
    assert batches[-1].warning is not None and "ignored the paging parameter max_id" in batches[-1].warning
    assert len(rsps.calls) == 2


def test_the_first_poll_reads_max_pages_and_then_only_what_is_newer(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    first, second = page(113200000000000100, 40), page(113200000000000060, 40)
    serve_search(rsps, first)
    serve_search(rsps, second, max_id=first[-1]["id"])

    batches = list(make_source(max_pages=2).fetch(SEARCH, {}))

    # No backfill beyond max_pages: the next poll starts from the newest post.
    assert [b.cursor for b in batches] == [
        {"newest_id": first[0]["id"], "max_id": first[-1]["id"]},
        {"since_id": first[0]["id"]},
    ]
    assert len(rsps.calls) == 2


def test_pagination_stops_at_max_pages_and_the_cursor_resumes_there(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    first, second = page(113200000000000100, 40), page(113200000000000060, 40)
    serve_search(rsps, first)
    serve_search(rsps, second, max_id=first[-1]["id"])

    batches = list(make_source(max_pages=2).fetch(SEARCH, {"since_id": OLD_ID}))

    assert len(rsps.calls) == 2
    assert batches[-1].cursor == {"since_id": OLD_ID, "newest_id": first[0]["id"], "max_id": second[-1]["id"]}


def test_a_monthly_read_cap_limits_the_page_size(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource]
) -> None:
    statuses = page(113200000000000100, 10)
    serve_search(rsps, statuses)

    batches = list(make_source().fetch(SEARCH, {"since_id": OLD_ID}, limit=10))

    assert params(rsps.calls[0])["limit"] == "10"
    assert len(rsps.calls) == 1 and [b.reads for b in batches] == [10]
    assert batches[0].cursor == {
        "since_id": OLD_ID,
        "newest_id": statuses[0]["id"],
        "max_id": statuses[-1]["id"],
    }


# --- through the collector (SQLite and PostgreSQL) ----------------------------------------------


def searching_bbox(make_settings: Callable[..., Settings], db: Database) -> tuple[Settings, str]:
    """A source searching "bbox" on mastodon.social with a token, its stream already past OLD_ID."""
    settings = make_settings(
        sources=[
            {
                "type": "mastodon",
                "name": "masto",
                "instances": [SOCIAL],
                "access_token": TOKEN,
                "query": "bbox",
            }
        ]
    )
    stream = f"{SOCIAL} search:bbox"
    seed_cursor(db, stream, {"since_id": OLD_ID})
    return settings, stream


def test_a_failure_mid_pagination_resumes_with_no_gap_and_no_duplicate(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    first, last = page(113200000000000100, 40), page(113200000000000060, 12)
    newest, oldest_read = first[0]["id"], first[-1]["id"]
    settings, stream = searching_bbox(make_settings, db)
    clock = Clock()
    collector = collector_for(settings, db, clock)
    try:
        serve_search(rsps, first, q="bbox")
        serve_error(rsps, SEARCH_URL, "unavailable")  # page 2 (max_id sent) fails
        report = collector.collect()

        error = "source masto: mastodon.social server error (503); will retry"
        assert [e.error for e in report.errors] == [error]
        assert [r.external_id for r in stored(db)] == uris(first)
        row = stream_state(db, stream)
        assert row.last_error == error and row.consecutive_errors == 1
        assert row.cursor == {"since_id": OLD_ID, "newest_id": newest, "max_id": oldest_read}

        rsps.reset()
        clock.now += 300  # the next poll
        serve_search(rsps, last, q="bbox", max_id=oldest_read)
        assert collector.collect().errors == []

        assert [params(c).get("max_id") for c in rsps.calls] == [oldest_read]
        rows = stored(db)
        assert [r.external_id for r in rows] == uris(first) + uris(last)
        assert all(r.brand == "Bouygues Telecom" for r in rows)
        row = stream_state(db, stream)
        assert row.cursor == {"since_id": newest}
        assert row.last_error is None and row.consecutive_errors == 0
        assert row.mentions_total == 52

        # The poll after that: the newest page holds nothing newer than since_id.
        rsps.reset()
        clock.now += 300
        serve_search(rsps, first, q="bbox")
        assert collector.collect().errors == []
        assert len(stored(db)) == 52
        assert stream_state(db, stream).cursor == {"since_id": newest}
    finally:
        collector.close()


def test_a_post_seen_on_two_instances_is_stored_once_with_the_brand_account_recognised(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    brand = {**BRAND, "handles": [*BRAND["handles"], "@bouyguestelecom@mastodon.social"]}
    settings = make_settings(
        brands=[brand],
        sources=[
            {
                "type": "mastodon",
                "name": "masto",
                "instances": [SOCIAL, PIAILLE],
                "access_token": TOKEN,
                "query": '"Bouygues Telecom"',
                "hashtags": ["BouyguesTelecom"],
            }
        ],
    )
    search, timeline = load("search_statuses.json")["statuses"], load("tag_timeline.json")
    serve_search(rsps, search)
    serve_tag(rsps, SOCIAL, "BouyguesTelecom", [])
    serve_tag(rsps, PIAILLE, "BouyguesTelecom", timeline)
    collector = collector_for(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert report.errors == []
    rows = {r.external_id: r for r in stored(db)}
    # marie's post came from both instances (ids 113200000000000010 and 113200000999000020): once.
    assert timeline[1]["uri"] == MARIE_URI and timeline[1]["id"] != search[4]["id"]
    public = [s for s in search if s["visibility"] != "private"]
    assert list(rows) == [*uris(public), timeline[0]["uri"], timeline[2]["uri"]]
    assert rows[MARIE_URI].author_handle == "marie_l@mastodon.social"
    assert all(r.brand == "Bouygues Telecom" for r in rows.values())
    answer = rows[timeline[0]["uri"]]
    assert answer.author_is_brand and answer.author_handle == "bouyguestelecom@mastodon.social"
    assert not rows[MARIE_URI].author_is_brand
    assert [stream_state(db, s).cursor for s in collector.sources[0].streams()] == [
        {"since_id": search[0]["id"]},
        {},
        {"since_id": timeline[0]["id"]},
    ]
    assert "Authorization" not in next(c for c in rsps.calls if PIAILLE in str(c.request.url)).request.headers


def test_a_dead_instance_fails_its_own_streams_only_and_costs_one_attempt(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    settings = make_settings(
        sources=[
            {
                "type": "mastodon",
                "name": "masto",
                "instances": [SOCIAL, PIAILLE],
                "hashtags": ["BouyguesTelecom", "bbox"],
            }
        ]
    )
    rsps.add(responses.GET, tag_url(SOCIAL, "BouyguesTelecom"), body=requests.ConnectionError("refused"))
    serve_tag(rsps, PIAILLE, "BouyguesTelecom", load("tag_timeline.json"))
    serve_tag(rsps, PIAILLE, "bbox", [])
    collector = collector_for(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    failed = {e.stream: e.error for e in report.errors}
    assert set(failed) == {f"{SOCIAL} tag:BouyguesTelecom", f"{SOCIAL} tag:bbox"}
    assert failed[f"{SOCIAL} tag:BouyguesTelecom"] == (
        "source masto: mastodon.social unreachable (ConnectionError); will retry"
    )
    assert "not retried for this stream until the next poll" in (failed[f"{SOCIAL} tag:bbox"] or "")
    assert sum(SOCIAL in str(c.request.url) for c in rsps.calls) == 1
    assert len(stored(db)) == 3  # piaille.fr's streams went on
    assert stream_state(db, f"{PIAILLE} tag:BouyguesTelecom").last_error is None
    assert stream_state(db, f"{SOCIAL} tag:bbox").consecutive_errors == 1


def test_a_rate_limit_parks_the_instance_streams_until_the_reset(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    settings = make_settings(
        sources=[
            {
                "type": "mastodon",
                "name": "masto",
                "instances": [SOCIAL, PIAILLE],
                "hashtags": ["BouyguesTelecom", "bbox"],
            }
        ]
    )
    serve_error(rsps, tag_url(SOCIAL, "BouyguesTelecom"), "rate_limited")
    serve_tag(rsps, PIAILLE, "BouyguesTelecom", load("tag_timeline.json"))
    serve_tag(rsps, PIAILLE, "bbox", [])
    collector = collector_for(settings, db)
    reset = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    try:
        report = collector.collect()
        limited = (
            "source masto: mastodon.social rate limit reached (429); resets at 2030-01-01T00:05:00+00:00"
        )
        assert {e.stream: e.error for e in report.errors} == {
            f"{SOCIAL} tag:BouyguesTelecom": limited,
            f"{SOCIAL} tag:bbox": limited,  # same instance, same limit: not even asked
        }
        assert sum(SOCIAL in str(c.request.url) for c in rsps.calls) == 1
        for tag in ("BouyguesTelecom", "bbox"):
            row = stream_state(db, f"{SOCIAL} tag:{tag}")
            assert row.parked_until == reset and row.next_poll_at == reset
        assert len(stored(db)) == 3

        rsps.reset()
        report = collector.collect()  # parked streams are skipped without a request
        assert [line.stream for line in report.streams if line.parked] == [
            f"{SOCIAL} tag:BouyguesTelecom",
            f"{SOCIAL} tag:bbox",
        ]
        assert not any(SOCIAL in str(c.request.url) for c in rsps.calls)
    finally:
        collector.close()


def test_a_refused_token_parks_the_stream_until_the_settings_change(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    settings, stream = searching_bbox(make_settings, db)
    serve_error(rsps, SEARCH_URL, "token_invalid")
    collector = collector_for(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert len(report.errors) == 1
    row = stream_state(db, stream)
    assert row.cursor == {"since_id": OLD_ID}
    assert row.parked_reason is not None and "refused the access token (401)" in row.parked_reason
    assert row.parked_until is None and row.config_fingerprint is not None
    columns = {c.key: getattr(row, c.key) for c in SourceStateRow.__table__.columns}
    assert TOKEN not in json.dumps(columns, default=str)


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stream", "kind", "expected"),
    [
        ("rate_limited", SEARCH, RetriableSourceError, ["429", "resets at 2030-01-01T00:05:00+00:00"]),
        ("rate_limited_no_reset", SEARCH, RetriableSourceError, ["429", "resets at later"]),
        (
            "token_invalid",
            SEARCH,
            AccessRefusedError,
            ["refused the access token (401)", "The access token is invalid", "MASTODON_ACCESS_TOKEN"],
        ),
        (
            "login_required",
            f"{PIAILLE} tag:bbox",
            AccessRefusedError,
            ["piaille.fr requires login", "This method requires an authenticated user"],
        ),
        (
            "outside_scopes",
            SEARCH,
            AccessRefusedError,
            ["(403)", "outside the authorized scopes", "read scope"],
        ),
        ("not_found", f"{PIAILLE} tag:bbox", FatalSourceError, ["(404)", "check that https://piaille.fr"]),
        ("unprocessable", SEARCH, FatalSourceError, ["rejected the search '\"Bouygues Telecom\"' (422)"]),
        ("unavailable", SEARCH, RetriableSourceError, ["server error (503); will retry"]),
    ],
    ids=["429", "429-no-reset", "401-token", "401-login", "403", "404", "422", "503"],
)
def test_api_errors_map_to_source_errors_without_the_token(
    rsps: responses.RequestsMock,
    make_source: Callable[..., MastodonSource],
    name: str,
    stream: str,
    kind: type[SourceError],
    expected: list[str],
) -> None:
    source = make_source(instances=[SOCIAL, PIAILLE], hashtags=["bbox"])
    url = SEARCH_URL if "search:" in stream else tag_url(PIAILLE, "bbox")
    serve_error(rsps, url, name)

    with pytest.raises(kind) as caught:
        list(source.fetch(stream, {"since_id": OLD_ID}))

    message = str(caught.value)
    for part in expected:
        assert part in message
    assert TOKEN not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    if name == "rate_limited":
        assert caught.value.retry_at == datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    else:
        assert caught.value.retry_at is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            requests.ReadTimeout(f"read timed out {TOKEN}"),
            "source masto: mastodon.social timed out after 30s; will retry",
        ),
        (
            requests.ConnectionError(f"boom {TOKEN}"),
            "source masto: mastodon.social unreachable (ConnectionError); will retry",
        ),
        (
            "<html><body>502 Bad Gateway</body></html>",
            "source masto: mastodon.social returned malformed JSON; will retry",
        ),
        (
            '{"accounts": [], "hashtags": []}',
            "source masto: mastodon.social returned an unexpected payload; will retry",
        ),
    ],
    ids=["timeout", "network", "malformed-json", "no-statuses"],
)
def test_transient_failures_are_retriable_and_name_no_secret(
    rsps: responses.RequestsMock, make_source: Callable[..., MastodonSource], body: Any, expected: str
) -> None:
    rsps.add(responses.GET, SEARCH_URL, body=body, content_type="application/json")

    with pytest.raises(RetriableSourceError) as caught:
        list(make_source().fetch(SEARCH, {}))

    assert str(caught.value) == expected


# --- configuration ----------------------------------------------------------------------------


def test_without_token_or_hashtags_the_source_is_skipped_with_the_reason(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    settings = make_settings(
        sources=[
            {
                "type": "mastodon",
                "name": "masto",
                "instances": [SOCIAL],
                "access_token": "${MASTODON_ACCESS_TOKEN:-}",
            }
        ]
    )
    collector = collector_for(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    reason = report.skipped["masto"]
    assert "MASTODON_ACCESS_TOKEN" in reason and "hashtags" in reason and SOCIAL in reason
    assert report.streams == [] and len(rsps.calls) == 0


def test_an_optional_env_token_enables_search_when_set() -> None:
    raw = {
        "database": "sqlite://",
        "brands": [BRAND],
        "sources": [
            {
                "type": "mastodon",
                "name": "masto",
                "instances": [SOCIAL],
                "hashtags": ["BouyguesTelecom"],
                "access_token": "${MASTODON_ACCESS_TOKEN:-}",
            }
        ],
    }

    unset = settings_from_dict(raw, env={})
    source = MastodonSource(unset.sources[0], unset.brands)  # type: ignore[arg-type]
    assert source.disabled_reason() is None
    assert source.streams() == [f"{SOCIAL} tag:BouyguesTelecom"]

    configured = settings_from_dict(raw, env={"MASTODON_ACCESS_TOKEN": TOKEN})
    source = MastodonSource(configured.sources[0], configured.brands)  # type: ignore[arg-type]
    assert source.streams()[:2] == [f"{SOCIAL} search:Bouygues Telecom", f"{SOCIAL} search:BouyguesTelecom"]
    assert TOKEN not in repr(configured) and TOKEN not in str(configured.sources[0])


def test_instances_and_hashtags_are_checked_and_normalised() -> None:
    config = MastodonConfig.model_validate(
        {
            "name": "masto",
            "instances": ["HTTPS://Mastodon.Social/", "https://mastodon.social", "https://piaille.fr"],
            "hashtags": ["#BouyguesTelecom", "bouyguestelecom", "  fibre_optique "],
        }
    )
    assert config.instances == (SOCIAL, PIAILLE)
    assert config.hashtags == ("BouyguesTelecom", "fibre_optique")

    for instances in (
        [],
        ["http://mastodon.social"],
        ["https://mastodon.social/@bouygues"],
        ["mastodon.social"],
    ):
        with pytest.raises(ValidationError, match="instance"):
            MastodonConfig.model_validate({"name": "masto", "instances": instances})
    with pytest.raises(ValidationError, match="hashtags like"):
        MastodonConfig.model_validate(
            {"name": "masto", "instances": [SOCIAL], "hashtags": ["bouygues telecom"]}
        )
