"""X recent-search source against X's own example responses, served by `responses` (no network).

The payloads are X's saved API v2 examples under $SHARED/fixtures/x_api_v2 (see its INDEX.md). They
are loaded at test time; where a test needs something they lack (follower counts, a brand name in
the text, a missing next page) it copies a fixture and changes only that.
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
from conftest import BRAND, SHARED
from sqlalchemy import select

from monitor.collector import Collector
from monitor.config import Settings, settings_from_dict
from monitor.errors import FatalSourceError, RetriableSourceError, SourceError
from monitor.sources.twitter import (
    TWEET_FIELDS,
    USER_FIELDS,
    TwitterConfig,
    TwitterSource,
    default_query,
)
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow, SourceStateRow

X_FIXTURES = SHARED / "fixtures" / "x_api_v2"
SEARCH_URL = "https://api.twitter.com/2/tweets/search/recent"
TOKEN = "AAAAAAAAAAAAAAAAAAAAAtest%2Fbearer%3Dtoken-never-shown"
OLD_SINCE_ID = "1275000000000000000"

# The recent-search examples, newest first, as three pages of one search would come.
MEDIA_PAGE = "search_tweets__recent_search__200_success_request_expanded_media_fields.json"
FIELDS_PAGE = "search_tweets__recent_search__200_success_request_tweet_fields.json"
DEFAULT_PAGE = "search_tweets__recent_search__200_success_recent_search_default_payload.json"
USERS_PAGE = "search_tweets__recent_search__200_success_request_tweet_fields_with_expanded_user_fields.json"
LOOKUP_WITH_FIELDS = "tweet_lookup__multiple_tweets__200_success_multiple_tweets_with_tweet_fields.json"


@cache
def _read(name: str) -> str:
    return (X_FIXTURES / name).read_text(encoding="utf-8")


def fixture(name: str) -> dict[str, Any]:
    """A fresh (mutable) copy of one saved example."""
    return copy.deepcopy(json.loads(_read(name)))


def recorded(name: str) -> dict[str, Any]:
    """The saved example's status, rate-limit headers, content type and body, from summary.json."""
    entry = next(e for e in json.loads(_read("summary.json")) if e["out"] == name)
    return {
        "status": entry["status"],
        "headers": entry["rate"],
        "content_type": entry["content_type"],
        "body": _read(name),
    }


def without_next_token(page: dict[str, Any]) -> dict[str, Any]:
    """The same page as the last one of its search."""
    page["meta"].pop("next_token", None)
    return page


def naming_brand(page: dict[str, Any], brand: str = "Bouygues Telecom") -> dict[str, Any]:
    """The same page with every tweet naming the brand, so the pipeline's matcher keeps it."""
    for tweet in page["data"]:
        tweet["text"] = f"{tweet['text']} #{brand.replace(' ', '')} {brand}"
    return page


def non_retweet_ids(page: dict[str, Any]) -> list[str]:
    return [
        t["id"]
        for t in page["data"]
        if not any(r["type"] == "retweeted" for r in t.get("referenced_tweets", ()))
    ]


def params(call: Any) -> dict[str, str]:
    query = parse_qs(urlsplit(call.request.url).query, keep_blank_values=True)
    return {key: values[-1] for key, values in query.items()}


def page_request(next_token: str | None) -> Callable[[Any], tuple[bool, str]]:
    """A `responses` matcher: the search request for the first page (None) or for `next_token`."""

    def match(request: Any) -> tuple[bool, str]:
        sent = parse_qs(urlsplit(request.url).query).get("next_token", [None])[-1]
        return sent == next_token, f"next_token {sent!r} != {next_token!r}"

    return match


def serve(
    rsps: responses.RequestsMock, body: Any, *, next_token: str | None = None, status: int = 200
) -> None:
    rsps.add(responses.GET, SEARCH_URL, json=body, status=status, match=[page_request(next_token)])


@pytest.fixture
def make_source(brands: tuple[Any, ...]) -> Iterator[Callable[..., TwitterSource]]:
    made: list[TwitterSource] = []

    def build(**overrides: Any) -> TwitterSource:
        config = TwitterConfig.model_validate({"name": "x", "bearer_token": TOKEN, **overrides})
        made.append(TwitterSource(config, brands))
        return made[-1]

    yield build
    for source in made:
        source.close()


def twitter_settings(make_settings: Callable[..., Settings], **source: Any) -> Settings:
    return make_settings(sources=[{"type": "twitter", "name": "x", "bearer_token": TOKEN, **source}])


def stored(db: Database) -> list[MentionRow]:
    with db.session() as session:
        rows = list(session.scalars(select(MentionRow).order_by(MentionRow.id)))
        session.expunge_all()
    return rows


def source_state(db: Database) -> SourceStateRow:
    with db.session() as session:
        row = session.scalar(
            select(SourceStateRow).where(SourceStateRow.source == "x", SourceStateRow.stream == "search")
        )
        assert row is not None
        session.expunge(row)
    return row


def seed_cursor(db: Database, cursor: dict[str, Any]) -> None:
    with db.session() as session:
        state.record_success(session, "x", "search", cursor, datetime(2020, 6, 24, tzinfo=UTC), 0)


# --- one page -> Mentions ---------------------------------------------------------------------


def test_a_search_page_becomes_mentions_without_retweets(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource]
) -> None:
    page = fixture(USERS_PAGE)
    # That example searched `conversation_id:1273733248749690880` without asking for the field,
    # nor for public_metrics: add what this source requests.
    for tweet in page["data"]:
        tweet["conversation_id"] = "1273733248749690880"
    followers = {"63046977": 1520, "17200003": 3077, "196883832": 416}
    for user in page["includes"]["users"]:
        user["public_metrics"] = {"followers_count": followers[user["id"]], "following_count": 10}
    retweet = fixture(FIELDS_PAGE)["data"][0]
    quote = next(t for t in fixture(LOOKUP_WITH_FIELDS)["data"] if t["id"] == "1276163304541618180")
    assert retweet["referenced_tweets"][0]["type"] == "retweeted"
    assert quote["referenced_tweets"] == [{"type": "quoted", "id": "1275898382758768645"}]
    page["data"] = [quote, *page["data"], retweet]
    serve(rsps, page)

    batches = list(make_source().fetch("search", {}))

    assert len(batches) == 1
    batch = batches[0]
    assert batch.stream == "search"
    assert batch.cursor == {"since_id": page["meta"]["newest_id"]}
    by_id = {m.external_id: m for m in batch.mentions}
    assert list(by_id) == [
        "1276163304541618180",  # quote: kept
        "1276035977375477760",  # replies: kept
        "1275882613572583424",
        "1275763727908798470",
        "1275653067283759104",
    ]  # the retweet (1275840892285399041) is not a mention
    first = by_id["1276035977375477760"]
    assert first.source == "x"
    assert first.url == "https://x.com/happycamper/status/1276035977375477760"
    assert first.author_id == "x:63046977"
    assert first.author_handle == "happycamper"
    assert first.author_name == "Emily Waligoske 🏕"
    assert first.author_followers == 1520
    assert first.lang == "en"
    assert first.published_at == datetime(2020, 6, 25, 6, 14, 19, tzinfo=UTC)
    assert first.published_at is not None and first.published_at.tzinfo == UTC
    assert first.conversation_id == "1273733248749690880"
    assert first.text.startswith("@snowman Ooo, thanks error message")
    snowman = by_id["1275882613572583424"]
    assert (snowman.author_handle, snowman.author_name, snowman.author_followers) == (
        "snowman",
        "Jim Moffitt",
        3077,
    )
    assert by_id["1275763727908798470"].lang is None  # "und": X could not tell
    # An author missing from includes.users: X's handle-less permalink, no name or followers.
    assert by_id["1276163304541618180"].url == "https://x.com/i/web/status/1276163304541618180"
    assert by_id["1276163304541618180"].author_id == "x:773578328498372608"
    assert by_id["1276163304541618180"].author_handle is None
    assert by_id["1276163304541618180"].author_followers is None
    assert by_id["1276163304541618180"].conversation_id == "1276163304541618180"


def test_the_request_carries_cursor_fields_and_default_query(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource], brands: tuple[Any, ...]
) -> None:
    serve(rsps, without_next_token(fixture(FIELDS_PAGE)))

    list(make_source().fetch("search", {"since_id": OLD_SINCE_ID}))

    assert len(rsps.calls) == 1
    sent = params(rsps.calls[0])
    assert sent == {
        "query": default_query(brands),
        "since_id": OLD_SINCE_ID,
        "max_results": "100",
        "expansions": "author_id",
        "tweet.fields": TWEET_FIELDS,
        "user.fields": USER_FIELDS,
    }
    assert sent["query"] == (
        '("Bouygues Telecom" OR "Bouygues Télécom" OR BouyguesTelecom OR @bouyguestelecom) -is:retweet'
    )
    for field in ("created_at", "lang", "conversation_id", "referenced_tweets", "author_id"):
        assert field in sent["tweet.fields"].split(",")
    assert "public_metrics" in sent["user.fields"].split(",")
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_configured_query_replaces_the_default_and_no_cursor_sends_no_since_id(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource]
) -> None:
    serve(rsps, {"meta": {"result_count": 0}})  # X's body when nothing matched

    batches = list(make_source(query='"Bouygues Telecom" lang:fr').fetch("search", {}))

    sent = params(rsps.calls[0])
    assert sent["query"] == '"Bouygues Telecom" lang:fr'
    assert "since_id" not in sent and "next_token" not in sent
    assert len(batches) == 1 and batches[0].mentions == [] and batches[0].cursor == {}


# --- pagination -------------------------------------------------------------------------------


def test_pages_are_followed_and_each_batch_carries_a_resumable_cursor(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource]
) -> None:
    first, second, last = fixture(MEDIA_PAGE), fixture(FIELDS_PAGE), without_next_token(fixture(DEFAULT_PAGE))
    serve(rsps, first)
    serve(rsps, second, next_token=first["meta"]["next_token"])
    serve(rsps, last, next_token=second["meta"]["next_token"])
    newest = first["meta"]["newest_id"]

    batches = list(make_source(max_pages=5).fetch("search", {"since_id": OLD_SINCE_ID}))

    assert [b.cursor for b in batches] == [
        {"since_id": OLD_SINCE_ID, "newest_id": newest, "next_token": first["meta"]["next_token"]},
        {"since_id": OLD_SINCE_ID, "newest_id": newest, "next_token": second["meta"]["next_token"]},
        {"since_id": newest},
    ]
    assert [[m.external_id for m in b.mentions] for b in batches] == [
        non_retweet_ids(first),
        non_retweet_ids(second),
        non_retweet_ids(last),
    ]
    sent = [params(call) for call in rsps.calls]
    assert [p.get("next_token") for p in sent] == [
        None,
        first["meta"]["next_token"],
        second["meta"]["next_token"],
    ]
    assert all(p["since_id"] == OLD_SINCE_ID for p in sent)


def test_pagination_stops_at_max_pages_and_the_cursor_resumes_there(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource]
) -> None:
    first, second = fixture(MEDIA_PAGE), fixture(FIELDS_PAGE)
    serve(rsps, first)
    serve(rsps, second, next_token=first["meta"]["next_token"])

    batches = list(make_source(max_pages=2).fetch("search", {"since_id": OLD_SINCE_ID}))

    assert len(rsps.calls) == 2
    assert batches[-1].cursor == {
        "since_id": OLD_SINCE_ID,
        "newest_id": first["meta"]["newest_id"],
        "next_token": second["meta"]["next_token"],
    }


# --- cursor safety through the collector (SQLite and PostgreSQL) ------------------------------


def test_a_failure_mid_pagination_resumes_with_no_gap_and_no_duplicate(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    page1 = naming_brand(fixture(FIELDS_PAGE))
    page2 = naming_brand(without_next_token(fixture(DEFAULT_PAGE)))
    token = page1["meta"]["next_token"]
    newest = page1["meta"]["newest_id"]
    seed_cursor(db, {"since_id": OLD_SINCE_ID})
    collector = Collector(twitter_settings(make_settings), db)
    try:
        serve(rsps, page1)
        serve(rsps, {"title": "Service Unavailable"}, next_token=token, status=503)
        report = collector.collect()

        assert [e.error for e in report.errors] == ["source x: X API server error (503); will retry"]
        assert [r.external_id for r in stored(db)] == non_retweet_ids(page1)
        row = source_state(db)
        assert row.last_error == "source x: X API server error (503); will retry"
        assert row.consecutive_errors == 1
        assert row.cursor == {"since_id": OLD_SINCE_ID, "newest_id": newest, "next_token": token}

        rsps.reset()
        serve(rsps, page2, next_token=token)
        report = collector.collect()

        assert report.errors == []
        assert [params(c) for c in rsps.calls] == [
            {
                "query": default_query(collector.settings.brands),
                "since_id": OLD_SINCE_ID,
                "next_token": token,
                "max_results": "100",
                "expansions": "author_id",
                "tweet.fields": TWEET_FIELDS,
                "user.fields": USER_FIELDS,
            }
        ]
        ids = [r.external_id for r in stored(db)]
        assert ids == non_retweet_ids(page1) + non_retweet_ids(page2)
        assert len(ids) == len(set(ids))
        row = source_state(db)
        assert row.cursor == {"since_id": newest}
        assert row.last_error is None and row.consecutive_errors == 0
        assert row.mentions_total == len(ids)

        # The poll after that asks only for what is newer than everything stored.
        rsps.reset()
        serve(rsps, {"meta": {"result_count": 0}})
        assert collector.collect().errors == []
        assert params(rsps.calls[0])["since_id"] == newest
        assert source_state(db).cursor == {"since_id": newest}
        assert len(stored(db)) == len(ids)
    finally:
        collector.close()


# --- a since_id older than X's 7-day search window -----------------------------------------


def stale_since_id_error(since_id: str) -> dict[str, Any]:
    """X's 400 for a since_id older than the 7-day window (the saved 400, with that error)."""
    body = fixture("tweet_lookup__multiple_tweets__400_bad_request_too_many_tweets.json")
    body["errors"] = [
        {
            "parameters": {"since_id": [since_id]},
            "message": "'since_id' must be a tweet id created after 2020-06-17T17:19Z. "
            "Please use a 'since_id' that is larger than 1273324180458000000",
        }
    ]
    return body


def since_id_sent(value: str | None) -> Callable[[Any], tuple[bool, str]]:
    def match(request: Any) -> tuple[bool, str]:
        sent = parse_qs(urlsplit(request.url).query).get("since_id", [None])[-1]
        return sent == value, f"since_id {sent!r} != {value!r}"

    return match


def test_a_since_id_too_old_for_recent_search_restarts_the_window(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource]
) -> None:
    page = without_next_token(fixture(FIELDS_PAGE))
    cursor = {"since_id": OLD_SINCE_ID, "newest_id": "1275100000000000000", "next_token": "stale-token"}
    rsps.add(
        responses.GET,
        SEARCH_URL,
        json=stale_since_id_error(OLD_SINCE_ID),
        status=400,
        match=[since_id_sent(OLD_SINCE_ID)],
    )
    rsps.add(responses.GET, SEARCH_URL, json=page, match=[since_id_sent(None), page_request(None)])

    batches = list(make_source().fetch("search", cursor))

    assert [b.cursor for b in batches] == [{"since_id": page["meta"]["newest_id"]}]
    assert [m.external_id for m in batches[0].mentions] == non_retweet_ids(page)
    assert "since_id" not in params(rsps.calls[1]) and "next_token" not in params(rsps.calls[1])


def test_a_stale_since_id_does_not_stop_the_source(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    page = naming_brand(without_next_token(fixture(FIELDS_PAGE)))
    seed_cursor(db, {"since_id": OLD_SINCE_ID})
    rsps.add(
        responses.GET,
        SEARCH_URL,
        json=stale_since_id_error(OLD_SINCE_ID),
        status=400,
        match=[since_id_sent(OLD_SINCE_ID)],
    )
    rsps.add(responses.GET, SEARCH_URL, json=page, match=[since_id_sent(None)])
    collector = Collector(twitter_settings(make_settings), db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert report.errors == []
    assert [r.external_id for r in stored(db)] == non_retweet_ids(page)
    row = source_state(db)
    assert row.cursor == {"since_id": page["meta"]["newest_id"]}
    assert row.last_error is None


# --- errors -----------------------------------------------------------------------------------


def _error_response(rsps: responses.RequestsMock, name: str) -> None:
    saved = recorded(name)
    rsps.add(
        responses.GET,
        SEARCH_URL,
        body=saved["body"],
        status=saved["status"],
        headers=saved["headers"],
        content_type=saved["content_type"],
    )


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        (
            "tweet_lookup__single_tweet__429_rate_limit_exceeded.txt",
            RetriableSourceError,
            ["429", "resets at 2020-06-26T15:24:33+00:00"],
        ),
        ("filtered_stream__retrieve_rules__401_unauthorized.json", FatalSourceError, ["401"]),
        (
            "filtered_stream__retrieve_rules__403_forbidden_client_not_enrolled.json",
            FatalSourceError,
            ["403", "approved developer account"],
        ),
        (
            "tweet_lookup__multiple_tweets__400_bad_request_too_many_tweets.json",
            FatalSourceError,
            ["rejected the query", "-is:retweet", "size [118] is not between 1 and 100"],
        ),
        (
            "filtered_stream__stream_see_description__429_too_many_requests.json",
            RetriableSourceError,
            ["resets at 2020-07-09T16:04:46+00:00"],
        ),
    ],
    ids=["429-text", "401", "403", "400", "429-json"],
)
def test_api_errors_map_to_source_errors_without_the_token(
    rsps: responses.RequestsMock,
    make_source: Callable[..., TwitterSource],
    name: str,
    kind: type[SourceError],
    expected: list[str],
) -> None:
    _error_response(rsps, name)

    with pytest.raises(kind) as caught:
        list(make_source().fetch("search", {"since_id": OLD_SINCE_ID}))

    message = str(caught.value)
    for part in expected:
        assert part in message
    assert TOKEN not in message and TOKEN not in repr(caught.value.args)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_429_without_reset_header_still_says_when(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource]
) -> None:
    rsps.add(responses.GET, SEARCH_URL, body="Rate limit exceeded\n", status=429)

    with pytest.raises(RetriableSourceError, match="resets at later"):
        list(make_source().fetch("search", {}))


def test_a_network_failure_is_retriable_and_names_no_secret(
    rsps: responses.RequestsMock, make_source: Callable[..., TwitterSource]
) -> None:
    rsps.add(responses.GET, SEARCH_URL, body=requests.ConnectionError(f"boom {TOKEN}"))

    with pytest.raises(RetriableSourceError) as caught:
        list(make_source().fetch("search", {}))

    assert str(caught.value) == "source x: network error calling the X API: ConnectionError"


@pytest.mark.parametrize(
    ("name", "kind_word"),
    [
        ("tweet_lookup__single_tweet__429_rate_limit_exceeded.txt", "rate limit"),
        ("filtered_stream__retrieve_rules__401_unauthorized.json", "refused"),
        ("tweet_lookup__multiple_tweets__400_bad_request_too_many_tweets.json", "rejected the query"),
    ],
    ids=["429", "401", "400"],
)
def test_a_failed_poll_is_recorded_without_the_token_and_keeps_the_cursor(
    db: Database,
    make_settings: Callable[..., Settings],
    rsps: responses.RequestsMock,
    name: str,
    kind_word: str,
) -> None:
    seed_cursor(db, {"since_id": OLD_SINCE_ID})
    _error_response(rsps, name)
    collector = Collector(twitter_settings(make_settings), db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert len(report.errors) == 1 and kind_word in (report.errors[0].error or "")
    row = source_state(db)
    assert row.cursor == {"since_id": OLD_SINCE_ID}
    assert row.last_error is not None and kind_word in row.last_error
    assert row.consecutive_errors == 1
    assert stored(db) == []
    columns = {c.key: getattr(row, c.key) for c in SourceStateRow.__table__.columns}
    assert TOKEN not in json.dumps(columns, default=str)


# --- configuration ----------------------------------------------------------------------------


def test_a_source_without_bearer_token_is_skipped_with_the_reason(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    settings = make_settings(sources=[{"type": "twitter", "name": "x"}])
    collector = Collector(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert "X_BEARER_TOKEN" in report.skipped["x"]
    assert report.streams == [] and len(rsps.calls) == 0
    assert collector.due_sources() == []


def test_an_optional_env_bearer_token_loads_unset_and_enables_when_set() -> None:
    raw = {
        "database": "sqlite://",
        "brands": [BRAND],
        "sources": [{"type": "twitter", "name": "x", "bearer_token": "${X_BEARER_TOKEN:-}"}],
    }

    unset = settings_from_dict(raw, env={})
    source = TwitterSource(unset.sources[0], unset.brands)
    reason = source.disabled_reason()
    assert reason is not None and "X_BEARER_TOKEN" in reason

    configured = settings_from_dict(raw, env={"X_BEARER_TOKEN": TOKEN})
    source = TwitterSource(configured.sources[0], configured.brands)
    assert source.disabled_reason() is None
    assert TOKEN not in repr(configured) and TOKEN not in str(configured.sources[0])


# --- the brand's own account ------------------------------------------------------------------


def test_a_tweet_from_the_brand_account_is_stored_as_the_brands(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    page = naming_brand(fixture(USERS_PAGE))
    brand_user = page["includes"]["users"][1]  # snowman (17200003) plays the brand's account
    brand_user.update(username="BouyguesTelecom", name="Bouygues Telecom")
    page["data"][2]["text"] = "@bouyguestelecom my fibre box is down again"  # named by its handle only
    serve(rsps, page)
    collector = Collector(twitter_settings(make_settings), db)
    try:
        assert collector.collect().errors == []
    finally:
        collector.close()

    rows = {r.external_id: r for r in stored(db)}
    assert set(rows) == {t["id"] for t in page["data"]}
    assert {i for i, r in rows.items() if r.author_is_brand} == {
        "1275882613572583424",
        "1275653067283759104",
    }
    assert all(r.brand == "Bouygues Telecom" for r in rows.values())
    own = rows["1275882613572583424"]
    assert own.author_handle == "BouyguesTelecom"
    assert own.url == "https://x.com/BouyguesTelecom/status/1275882613572583424"
    assert own.author_id == "x:17200003"
    assert rows["1275763727908798470"].author_is_brand is False


def test_default_query_leaves_out_handles_of_other_networks() -> None:
    brands = settings_from_dict(
        {
            "database": "sqlite://",
            "brands": [
                {
                    "name": "Bouygues Telecom",
                    "handles": [
                        "@bouyguestelecom",
                        "@bouyguestelecom@mastodon.social",
                        "@bouyguestelecom.bsky.social",
                    ],
                }
            ],
        }
    ).brands
    assert default_query(brands) == '("Bouygues Telecom" OR @bouyguestelecom) -is:retweet'
