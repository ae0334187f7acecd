"""The X source's limits and faults through the collector, as a user of `monitor` sees them.

Rate limits (429), refused credentials (401/403), server errors and backoff, malformed JSON, partial
`errors` arrays, the monthly read cap, the brand's mention timeline, and one `monitor collect --once`
run with an RSS source next to X. Time is an injected clock, never a sleep; X is served by `responses`
from its saved API v2 examples (see test_twitter.py), the RSS feed by the local feed server.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from conftest import BRAND
from responses import matchers
from sqlalchemy import select
from test_twitter import (
    DEFAULT_PAGE,
    FIELDS_PAGE,
    MEDIA_PAGE,
    OLD_SINCE_ID,
    SEARCH_URL,
    TOKEN,
    USERS_PAGE,
    fixture,
    naming_brand,
    non_retweet_ids,
    params,
    recorded,
    seed_cursor,
    serve,
    stored,
    twitter_settings,
    without_next_token,
)

from monitor.cli import main
from monitor.collector import Collector, CycleReport
from monitor.config import Settings, load_config
from monitor.feedserver import FeedServer
from monitor.status import source_health
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import Base, SourceStateRow, SourceUsageRow

from feeds import rss

EVERY = timedelta(minutes=5)  # the twitter source's default poll interval
NEW_TOKEN = "AAAAAAAAAAAAAAAAAAAAAfixed%2Fbearer%3Dtoken-never-shown-either"
OTHER_TOKEN = "AAAAAAAAAAAAAAAAAAAAAother%2Fsource%3Dtoken"
USER_URL = "https://api.twitter.com/2/users/by/username/bouyguestelecom"
BRAND_USER_ID = "2244994945"  # X's example account plays @bouyguestelecom
MENTIONS_URL = f"https://api.twitter.com/2/users/{BRAND_USER_ID}/mentions"
MENTIONS_STREAM = "mentions:@bouyguestelecom"
PARTIAL = "tweet_lookup__multiple_tweets__200_success_1_deleted_1_valid_tweet.json"
PARTIAL_WARNING = (
    "X API returned 1 partial error(s) with the data: Could not find tweet with ids: [1276230436478386177]."
)


class Clock:
    """The collector's `now`; a test moves it instead of sleeping. Starts at the real now, so the CLI
    (which reads the real time) sees the same parking and the same month."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` installs its log handler on the root logger; drop it after the test (its stream is
    the test's captured stderr, closed by then)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def configure(tmp_path: Path, db_url: str) -> Callable[..., tuple[Path, Settings]]:
    """Write a config file with these sources on the test database; return it and its settings."""

    def write(*sources: dict[str, Any]) -> tuple[Path, Settings]:
        path = tmp_path / "monitor.yaml"
        raw = {"database": db_url, "brands": [BRAND], "sources": list(sources)}
        path.write_text(json.dumps(raw), encoding="utf-8")
        return path, load_config(path)

    return write


def x_source(**overrides: Any) -> dict[str, Any]:
    return {"type": "twitter", "name": "x", "bearer_token": TOKEN, **overrides}


def poll(settings: Settings, db: Database, clock: Clock) -> CycleReport:
    """One `collect` cycle, as `monitor collect --once` runs it, at the clock's time."""
    collector = Collector(settings, db, clock=clock)
    try:
        return collector.collect()
    finally:
        collector.close()


def due(settings: Settings, db: Database, clock: Clock) -> list[str]:
    """The sources the daemon would poll now."""
    collector = Collector(settings, db, clock=clock)
    try:
        return [s.name for s in collector.due_sources()]
    finally:
        collector.close()


def stream_state(db: Database, stream: str = "search", source: str = "x") -> SourceStateRow:
    with db.session() as session:
        row = state.get_state(session, source, stream)
        session.expunge(row)
    return row


def usage(db: Database) -> list[tuple[str, str, int]]:
    with db.session() as session:
        rows = session.scalars(select(SourceUsageRow).order_by(SourceUsageRow.month))
        return [(r.source, r.month, r.reads) for r in rows]


def health(settings: Settings, db: Database, now: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["source"], r["stream"]): r for r in source_health(settings, db, now=now)}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sources_json(capsys: pytest.CaptureFixture[str], path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """What `monitor sources --format json` shows, per (source, stream)."""
    code, out, err = run_cli(capsys, "--config", str(path), "sources", "--format", "json")
    assert code == 0, err
    return {(r["source"], r["stream"]): r for r in json.loads(out)}


def database_text(db: Database) -> str:
    """Every row of every table, as text: for looking for secrets."""
    with db.session() as session:
        rows = [
            [table.name, *row]
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table))
        ]
    return json.dumps(rows, default=str, ensure_ascii=False)


def query_is(**expected: str | None) -> Callable[[Any], tuple[bool, str]]:
    """A `responses` matcher: these query parameters have these values (None: not sent)."""

    def match(request: Any) -> tuple[bool, str]:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.url).query).items()}
        wrong = {k: query.get(k) for k, v in expected.items() if query.get(k) != v}
        return not wrong, f"sent {wrong}, expected {expected}"

    return match


def bearer(token: str) -> Any:
    return matchers.header_matcher({"Authorization": f"Bearer {token}"})


def calls_with(rsps: responses.RequestsMock, token: str) -> int:
    return sum(c.request.headers.get("Authorization") == f"Bearer {token}" for c in rsps.calls)


def tweets_page(count: int, newest: int, next_token: str | None = None) -> dict[str, Any]:
    """A recent-search page of `count` tweets (the saved example's tweets, re-numbered down from
    `newest`, all naming the brand), with X's meta."""
    examples = naming_brand(fixture(FIELDS_PAGE))["data"]
    data = []
    for i in range(count):
        tweet = copy.deepcopy(examples[i % len(examples)])
        tweet["id"] = str(newest - i)
        data.append(tweet)
    meta: dict[str, Any] = {"newest_id": data[0]["id"], "oldest_id": data[-1]["id"], "result_count": count}
    if next_token:
        meta["next_token"] = next_token
    return {"data": data, "meta": meta}


def partial_errors() -> list[dict[str, Any]]:
    """The `errors` array X sent next to `data` for one deleted tweet among those asked for."""
    errors = fixture(PARTIAL)["errors"]
    assert fixture(PARTIAL)["data"]  # the saved response had data too
    return errors


# --- 1. pagination, then since_id ---------------------------------------------------------------


def test_two_pages_then_the_next_poll_sends_only_since_id_and_stores_nothing_twice(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock, clock: Clock
) -> None:
    settings = twitter_settings(make_settings)
    page1 = naming_brand(fixture(MEDIA_PAGE))
    page2 = naming_brand(without_next_token(fixture(FIELDS_PAGE)))
    token, newest = page1["meta"]["next_token"], page1["meta"]["newest_id"]
    serve(rsps, page1)
    serve(rsps, page2, next_token=token)

    assert poll(settings, db, clock).errors == []

    sent = [params(c) for c in rsps.calls]
    assert [p.get("next_token") for p in sent] == [None, token]
    assert all("since_id" not in p for p in sent)  # nothing stored yet: the whole 7-day window
    first_ids = [r.external_id for r in stored(db)]
    assert first_ids == non_retweet_ids(page1) + non_retweet_ids(page2)
    assert stream_state(db).cursor == {"since_id": newest}

    # Five minutes later X has one new tweet, and sends the newest stored one again with it.
    clock.advance(EVERY)
    resent = copy.deepcopy(page1["data"][0])
    new = copy.deepcopy(resent) | {"id": str(int(newest) + 1), "text": "Bouygues Telecom: plus de réseau"}
    rsps.reset()
    serve(
        rsps,
        {"data": [new, resent], "meta": {"newest_id": new["id"], "oldest_id": newest, "result_count": 2}},
    )

    report = poll(settings, db, clock)

    assert report.errors == [] and report.totals.duplicates == 1 and report.totals.stored == 1
    (call,) = rsps.calls
    assert params(call)["since_id"] == newest and "next_token" not in params(call)
    ids = [r.external_id for r in stored(db)]
    assert ids == [*first_ids, new["id"]]
    assert len(ids) == len(set(ids))
    row = stream_state(db)
    assert row.cursor == {"since_id": new["id"]}
    assert row.mentions_total == len(ids)


# --- 2. 429: parked until the reset -------------------------------------------------------------


def test_a_429_parks_the_stream_until_the_reset_then_it_polls_again(
    db: Database,
    configure: Callable[..., tuple[Path, Settings]],
    rsps: responses.RequestsMock,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, settings = configure(x_source())
    seed_cursor(db, {"since_id": OLD_SINCE_ID})
    reset = clock.now + timedelta(minutes=15)
    saved = recorded("tweet_lookup__single_tweet__429_rate_limit_exceeded.txt")  # X's real plain-text 429
    rsps.add(
        responses.GET,
        SEARCH_URL,
        body=saved["body"],
        status=429,
        headers={**saved["headers"], "x-rate-limit-reset": str(int(reset.timestamp()))},
        content_type=saved["content_type"],
    )

    report = poll(settings, db, clock)

    message = f"source x: X API rate limit reached (429); resets at {reset.isoformat()}"
    assert [line.error for line in report.streams] == [message]
    row = stream_state(db)
    assert (row.parked_until, row.next_poll_at, row.parked_reason) == (reset, reset, message)
    assert row.cursor == {"since_id": OLD_SINCE_ID}
    parked = f"{message} (parked until {reset:%Y-%m-%d %H:%M} UTC)"
    shown = health(settings, db, clock.now)[("x", "search")]
    assert (shown["status"], shown["parked_reason"], shown["parked_until"]) == ("parked", parked, reset)
    listed = sources_json(capsys, path)[("x", "search")]
    assert (listed["status"], listed["parked_reason"]) == ("parked", parked)
    assert datetime.fromisoformat(listed["parked_until"]) == reset

    # Ten minutes later: still parked, the daemon does not poll it, and a forced poll calls nothing.
    clock.advance(timedelta(minutes=10))
    assert due(settings, db, clock) == []
    report = poll(settings, db, clock)
    assert len(rsps.calls) == 1
    assert report.errors == [] and [line.parked for line in report.streams] == [parked]

    # After the reset: due again, polled from the same cursor, and the parking is gone.
    clock.advance(timedelta(minutes=6))
    assert due(settings, db, clock) == ["x"]
    rsps.reset()
    page = naming_brand(without_next_token(fixture(FIELDS_PAGE)))
    serve(rsps, page)

    report = poll(settings, db, clock)

    assert report.errors == [] and [line.parked for line in report.streams] == [None]
    (call,) = rsps.calls
    assert params(call)["since_id"] == OLD_SINCE_ID
    assert [r.external_id for r in stored(db)] == non_retweet_ids(page)
    row = stream_state(db)
    assert (row.parked_until, row.parked_reason, row.last_error, row.consecutive_errors) == (
        None,
        None,
        None,
        0,
    )
    assert row.cursor == {"since_id": page["meta"]["newest_id"]}
    shown = health(settings, db, clock.now)[("x", "search")]
    assert (shown["status"], shown["parked_reason"], shown["parked_until"]) == ("ok", None, None)


# --- 3. 401/403: parked until the config changes ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "refusal", "advice"),
    [
        (
            "filtered_stream__retrieve_rules__401_unauthorized.json",
            "source x: X API refused the bearer token (401): Unauthorized",
            "check X_BEARER_TOKEN (or bearer_token)",
        ),
        (
            "filtered_stream__retrieve_rules__403_forbidden_client_not_enrolled.json",
            "source x: X API forbids this request (403): This request must be made using an approved developer account",
            "check the app's access level and that it is attached to a project",
        ),
    ],
    ids=["401", "403"],
)
def test_refused_credentials_park_the_source_until_its_config_changes(
    db: Database,
    configure: Callable[..., tuple[Path, Settings]],
    rsps: responses.RequestsMock,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    name: str,
    refusal: str,
    advice: str,
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    other = x_source(name="other", bearer_token=OTHER_TOKEN)  # a second source that works
    path, settings = configure(x_source(), other)
    saved = recorded(name)
    rsps.add(
        responses.GET,
        SEARCH_URL,
        body=saved["body"],
        status=saved["status"],
        headers=saved["headers"],
        content_type=saved["content_type"],
        match=[bearer(TOKEN)],
    )
    rsps.add(responses.GET, SEARCH_URL, json={"meta": {"result_count": 0}}, match=[bearer(OTHER_TOKEN)])

    report = poll(settings, db, clock)

    (line,) = report.errors
    assert line.source == "x" and line.error is not None
    assert line.error.startswith(refusal) and line.error.endswith(advice)
    assert [(s.source, s.error) for s in report.streams if s.source == "other"] == [("other", None)]
    row = stream_state(db)
    assert row.parked_reason == line.error and row.parked_until is None
    parked = f"{line.error} (parked until its settings change)"
    for shown in (health(settings, db, clock.now), sources_json(capsys, path)):
        assert (shown[("x", "search")]["status"], shown[("x", "search")]["parked_reason"]) == (
            "parked",
            parked,
        )
        assert shown[("other", "search")]["status"] == "ok"

    # Same settings, hours later: the other source is polled, this one calls nothing.
    clock.advance(timedelta(hours=3))
    report = poll(settings, db, clock)
    assert calls_with(rsps, TOKEN) == 1 and calls_with(rsps, OTHER_TOKEN) == 2
    assert report.errors == [] and [s.parked for s in report.streams if s.source == "x"] == [parked]

    # The user fixes the token: the source is polled again, with the new token, and recovers.
    path, settings = configure(x_source(bearer_token=NEW_TOKEN), other)
    assert health(settings, db, clock.now)[("x", "search")]["status"] == "error"  # will be retried
    page = naming_brand(without_next_token(fixture(FIELDS_PAGE)))
    rsps.add(responses.GET, SEARCH_URL, json=page, match=[bearer(NEW_TOKEN)])
    clock.advance(timedelta(minutes=1))

    report = poll(settings, db, clock)

    assert report.errors == [] and calls_with(rsps, NEW_TOKEN) == 1 and calls_with(rsps, TOKEN) == 1
    assert [r.external_id for r in stored(db)] == non_retweet_ids(page)
    row = stream_state(db)
    assert (row.parked_reason, row.config_fingerprint, row.last_error) == (None, None, None)
    assert sources_json(capsys, path)[("x", "search")]["status"] == "ok"

    # The tokens were never shown: not in errors, logs, nor any column of any table.
    assert f"source x [search]: {refusal.removeprefix('source x: ')}" in caplog.text
    for token in (TOKEN, NEW_TOKEN, OTHER_TOKEN):
        assert token not in caplog.text
        assert token not in database_text(db)
        assert token not in json.dumps(source_health(settings, db, now=clock.now), default=str)


def test_a_refused_token_never_reaches_the_logs_even_at_debug_level(
    db: Database,
    configure: Callable[..., tuple[Path, Settings]],
    rsps: responses.RequestsMock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """tweepy logs its request headers (the bearer token) at DEBUG: the CLI must scrub them."""
    path, _ = configure(x_source())
    saved = recorded("filtered_stream__retrieve_rules__401_unauthorized.json")
    rsps.add(responses.GET, SEARCH_URL, body=saved["body"], status=401, content_type=saved["content_type"])

    code, out, err = run_cli(capsys, "--log-level", "debug", "--config", str(path), "collect", "--once")

    assert code == 1
    assert "error x [search]: X API refused the bearer token (401)" in err
    assert "Making API request" in caplog.text  # tweepy's debug line was there, scrubbed
    for text in (out, err, caplog.text, database_text(db)):
        assert TOKEN not in text


# --- 4. 5xx: backoff with jitter, then recovery ---------------------------------------------------


def test_server_errors_back_off_then_a_success_clears_them_and_loses_nothing(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock, clock: Clock
) -> None:
    settings = twitter_settings(make_settings)
    seed_cursor(db, {"since_id": OLD_SINCE_ID})
    unavailable = {"title": "Service Unavailable", "detail": "Service Unavailable", "type": "about:blank"}
    rsps.add(responses.GET, SEARCH_URL, json=unavailable, status=503)
    message = "source x: X API server error (503); will retry"

    for failures in (1, 2):
        failed_at = clock.now
        report = poll(settings, db, clock)

        assert [line.error for line in report.errors] == [message]
        row = stream_state(db)
        assert (row.last_error, row.last_error_at, row.consecutive_errors) == (message, failed_at, failures)
        assert row.parked_reason is None and row.cursor == {"since_id": OLD_SINCE_ID}
        backoff = EVERY * 2 ** (failures - 1)
        assert row.next_poll_at is not None
        assert failed_at + backoff * 0.8 <= row.next_poll_at <= failed_at + backoff * 1.2
        shown = health(settings, db, clock.now)[("x", "search")]
        assert (shown["status"], shown["errors"], shown["last_error"]) == ("error", failures, message)
        assert due(settings, db, clock) == []
        clock.now = row.next_poll_at
        assert due(settings, db, clock) == ["x"]
    assert stored(db) == []

    rsps.reset()
    page1, page2 = naming_brand(fixture(FIELDS_PAGE)), naming_brand(without_next_token(fixture(DEFAULT_PAGE)))
    serve(rsps, page1)
    serve(rsps, page2, next_token=page1["meta"]["next_token"])

    report = poll(settings, db, clock)

    assert report.errors == []
    assert [params(c)["since_id"] for c in rsps.calls] == [OLD_SINCE_ID, OLD_SINCE_ID]
    ids = [r.external_id for r in stored(db)]
    assert ids == non_retweet_ids(page1) + non_retweet_ids(page2)
    row = stream_state(db)
    assert (row.last_error, row.consecutive_errors, row.last_ok_at) == (None, 0, clock.now)
    assert row.cursor == {"since_id": page1["meta"]["newest_id"]}
    assert row.next_poll_at is not None
    assert clock.now + EVERY <= row.next_poll_at <= clock.now + EVERY + settings.poll_jitter
    assert health(settings, db, clock.now)[("x", "search")]["status"] == "ok"


# --- 5. malformed JSON ----------------------------------------------------------------------------


def test_malformed_json_is_a_retriable_error_that_stores_nothing_and_keeps_the_cursor(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock, clock: Clock
) -> None:
    settings = twitter_settings(make_settings)
    seed_cursor(db, {"since_id": OLD_SINCE_ID})
    rsps.add(responses.GET, SEARCH_URL, body="{not json", status=200, content_type="application/json")

    report = poll(settings, db, clock)

    assert [line.error for line in report.errors] == ["source x: X API returned malformed JSON; will retry"]
    assert stored(db) == []
    row = stream_state(db)
    assert row.cursor == {"since_id": OLD_SINCE_ID}
    assert (row.consecutive_errors, row.parked_reason) == (1, None)  # retried with backoff, not parked
    assert row.next_poll_at is not None and row.next_poll_at <= clock.now + EVERY * 1.2
    shown = health(settings, db, clock.now)[("x", "search")]
    assert shown["status"] == "error" and "malformed JSON" in shown["last_error"]

    clock.now = row.next_poll_at
    rsps.reset()
    page = naming_brand(without_next_token(fixture(FIELDS_PAGE)))
    serve(rsps, page)
    assert poll(settings, db, clock).errors == []
    assert params(rsps.calls[0])["since_id"] == OLD_SINCE_ID
    assert [r.external_id for r in stored(db)] == non_retweet_ids(page)
    assert stream_state(db).consecutive_errors == 0


def test_malformed_json_mid_pagination_keeps_the_first_page_and_resumes_after_it(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock, clock: Clock
) -> None:
    settings = twitter_settings(make_settings)
    seed_cursor(db, {"since_id": OLD_SINCE_ID})
    page1, page2 = naming_brand(fixture(FIELDS_PAGE)), naming_brand(without_next_token(fixture(DEFAULT_PAGE)))
    token = page1["meta"]["next_token"]
    serve(rsps, page1)
    rsps.add(
        responses.GET,
        SEARCH_URL,
        body="{not json",
        content_type="application/json",
        match=[query_is(next_token=token)],
    )

    assert [line.error for line in poll(settings, db, clock).errors] == [
        "source x: X API returned malformed JSON; will retry"
    ]
    assert [r.external_id for r in stored(db)] == non_retweet_ids(page1)
    assert stream_state(db).cursor == {
        "since_id": OLD_SINCE_ID,
        "newest_id": page1["meta"]["newest_id"],
        "next_token": token,
    }

    rsps.reset()
    serve(rsps, page2, next_token=token)
    clock.advance(EVERY * 2)
    assert poll(settings, db, clock).errors == []
    (call,) = rsps.calls
    assert (params(call)["since_id"], params(call)["next_token"]) == (OLD_SINCE_ID, token)
    ids = [r.external_id for r in stored(db)]
    assert ids == non_retweet_ids(page1) + non_retweet_ids(page2) and len(ids) == len(set(ids))
    assert stream_state(db).cursor == {"since_id": page1["meta"]["newest_id"]}


# --- 6. partial `errors` next to `data` -----------------------------------------------------------


def test_partial_errors_next_to_data_store_the_data_and_show_a_warning(
    db: Database,
    configure: Callable[..., tuple[Path, Settings]],
    rsps: responses.RequestsMock,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="monitor")
    path, settings = configure(x_source())
    page1 = naming_brand(fixture(MEDIA_PAGE)) | {"errors": partial_errors()}
    page2 = naming_brand(without_next_token(fixture(FIELDS_PAGE)))  # a clean last page
    serve(rsps, page1)
    serve(rsps, page2, next_token=page1["meta"]["next_token"])

    report = poll(settings, db, clock)

    assert report.errors == []
    assert [r.external_id for r in stored(db)] == non_retweet_ids(page1) + non_retweet_ids(page2)
    row = stream_state(db)
    assert (row.last_warning, row.last_error) == (PARTIAL_WARNING, None)
    assert row.cursor == {"since_id": page1["meta"]["newest_id"]}
    listed = sources_json(capsys, path)[("x", "search")]
    assert (listed["status"], listed["last_warning"]) == ("ok", PARTIAL_WARNING)
    assert f"source x [search]: {PARTIAL_WARNING}" in caplog.text

    # A clean poll clears the warning.
    clock.advance(EVERY)
    rsps.reset()
    serve(rsps, {"meta": {"result_count": 0}})
    assert poll(settings, db, clock).errors == []
    assert stream_state(db).last_warning is None
    assert sources_json(capsys, path)[("x", "search")]["last_warning"] is None


# --- 7. the monthly read cap ----------------------------------------------------------------------


def test_the_monthly_read_cap_stops_the_source_until_next_month(
    db: Database,
    configure: Callable[..., tuple[Path, Settings]],
    rsps: responses.RequestsMock,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, settings = configure(x_source(monthly_read_cap=150))
    first = tweets_page(100, 1_280_000_000_000_000_500, next_token="page-2")
    second = tweets_page(50, 1_280_000_000_000_000_400, next_token="page-3")
    serve(rsps, first)
    serve(rsps, second, next_token="page-2")
    month = state.month_of(clock.now)

    report = poll(settings, db, clock)

    assert report.errors == []
    assert [params(c)["max_results"] for c in rsps.calls] == ["100", "50"]  # never past the cap
    assert usage(db) == [("x", month, 150)]  # retweets are billed too
    assert [r.external_id for r in stored(db)] == non_retweet_ids(first) + non_retweet_ids(second)
    assert stream_state(db).cursor == {"newest_id": first["meta"]["newest_id"], "next_token": "page-3"}

    # The next poll: parked until the 1st of next month, no HTTP call. (A second later, not minutes:
    # `monitor sources` reads the real clock, and must see the same month.)
    clock.advance(timedelta(seconds=1))
    resumes = state.next_month(clock.now)
    report = poll(settings, db, clock)

    assert len(rsps.calls) == 2 and report.errors == []
    reason = "monthly read cap reached (150/150 posts read this month)"
    assert [line.parked for line in report.streams] == [f"{reason}; resumes {resumes:%Y-%m-%d}"]
    row = stream_state(db)
    assert (row.parked_reason, row.parked_until, row.next_poll_at) == (reason, resumes, resumes)
    assert due(settings, db, clock) == []
    for shown in (health(settings, db, clock.now), sources_json(capsys, path)):
        listed = shown[("x", "search")]
        assert listed["status"] == "parked" and listed["parked_reason"].startswith(reason)
        assert (listed["reads_this_month"], listed["monthly_read_cap"]) == (150, 150)
        assert listed["estimated_cost"] == pytest.approx(150 * 0.005)
    code, table, _ = run_cli(capsys, "--config", str(path), "sources")
    assert code == 0 and "150/150 ($0.75)" in table and "monthly read cap reached" in " ".join(table.split())

    # Next month: polled again where it stopped, and counted in the new month.
    clock.now = resumes + timedelta(minutes=1)
    assert due(settings, db, clock) == ["x"]
    rsps.reset()
    third = tweets_page(10, 1_280_000_000_000_000_300)
    serve(rsps, third, next_token="page-3")

    report = poll(settings, db, clock)

    assert report.errors == [] and [line.parked for line in report.streams] == [None]
    (call,) = rsps.calls
    assert (params(call)["next_token"], params(call)["max_results"]) == ("page-3", "100")
    assert usage(db) == [("x", month, 150), ("x", state.month_of(clock.now), 10)]
    row = stream_state(db)
    assert (row.parked_reason, row.parked_until) == (None, None)
    assert row.cursor == {"since_id": first["meta"]["newest_id"]}
    listed = health(settings, db, clock.now)[("x", "search")]
    assert (listed["status"], listed["reads_this_month"]) == ("ok", 10)
    assert listed["estimated_cost"] == pytest.approx(0.05)


# --- 8. the brand's mention timeline --------------------------------------------------------------


def test_the_mention_timeline_looks_the_account_up_once_and_keeps_its_own_cursor(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock, clock: Clock
) -> None:
    settings = twitter_settings(make_settings, mentions_of="bouyguestelecom")
    account = fixture("user_lookup__user_by_username__200_success_default_payload.json")
    account["data"].update(username="bouyguestelecom", name="Bouygues Telecom")
    assert account["data"]["id"] == BRAND_USER_ID
    rsps.add(responses.GET, USER_URL, json=account)
    mentions1 = naming_brand(fixture(USERS_PAGE))
    mentions1["meta"]["next_token"] = "mentions-page-2"
    mentions2 = naming_brand(without_next_token(fixture(DEFAULT_PAGE)))
    rsps.add(responses.GET, MENTIONS_URL, json=mentions1, match=[query_is(pagination_token=None)])
    rsps.add(
        responses.GET, MENTIONS_URL, json=mentions2, match=[query_is(pagination_token="mentions-page-2")]
    )
    search = naming_brand(without_next_token(fixture(FIELDS_PAGE)))
    search["data"].append(mentions1["data"][-1])  # also found by the search: stored once
    serve(rsps, search)

    report = poll(settings, db, clock)

    assert report.errors == []
    assert [line.stream for line in report.streams] == ["search", MENTIONS_STREAM]
    urls = [c.request.url.split("?")[0] for c in rsps.calls]
    assert urls == [SEARCH_URL, USER_URL, MENTIONS_URL, MENTIONS_URL]
    timeline = [params(c) for c in rsps.calls[2:]]
    assert ["since_id" in p for p in timeline] == [False, False]
    assert [p.get("pagination_token") for p in timeline] == [None, "mentions-page-2"]
    assert all(p["expansions"] == "author_id" and p["max_results"] == "100" for p in timeline)
    ids = [r.external_id for r in stored(db)]
    expected = {*non_retweet_ids(search), *non_retweet_ids(mentions1), *non_retweet_ids(mentions2)}
    assert len(ids) == len(set(ids)) and set(ids) == expected
    newest_mention, newest_search = mentions1["meta"]["newest_id"], search["meta"]["newest_id"]
    assert stream_state(db, MENTIONS_STREAM).cursor == {"since_id": newest_mention, "user_id": BRAND_USER_ID}
    assert stream_state(db).cursor == {"since_id": newest_search}

    # The next poll: no lookup (the id is in the cursor), each stream from its own since_id.
    clock.advance(EVERY)
    rsps.reset()
    rsps.add(responses.GET, MENTIONS_URL, json={"meta": {"result_count": 0}})
    serve(rsps, {"meta": {"result_count": 0}})

    assert poll(settings, db, clock).errors == []

    sent = {c.request.url.split("?")[0]: params(c) for c in rsps.calls}
    assert list(sent) == [SEARCH_URL, MENTIONS_URL]  # USER_URL not called again
    assert sent[MENTIONS_URL]["since_id"] == newest_mention and "pagination_token" not in sent[MENTIONS_URL]
    assert sent[SEARCH_URL]["since_id"] == newest_search and "next_token" not in sent[SEARCH_URL]
    assert stream_state(db, MENTIONS_STREAM).cursor == {"since_id": newest_mention, "user_id": BRAND_USER_ID}
    assert len(stored(db)) == len(ids)


# --- 9. end to end: X and RSS in one `monitor collect --once` ------------------------------------


def test_collect_once_stores_x_and_rss_through_the_one_ingest_path(
    db: Database,
    configure: Callable[..., tuple[Path, Settings]],
    rsps: responses.RequestsMock,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed = rss(
        [
            {
                "title": "Bouygues Telecom augmente ses prix",
                "description": "Encore une hausse chez Bouygues Telecom, je vais résilier.",
                "link": "https://blog.example/hausse",
                "guid": "hausse",
            }
        ]
    )
    url = feed_server.add("/feed.xml", feed, content_type="application/rss+xml")
    path, _ = configure(x_source(), {"type": "rss", "name": "blogs", "urls": [url]})
    page = naming_brand(without_next_token(fixture(FIELDS_PAGE)))
    serve(rsps, page)

    code, out, err = run_cli(capsys, "--config", str(path), "collect", "--once")

    assert code == 0, err
    expected = len(non_retweet_ids(page)) + 1
    assert out.startswith(f"collected {expected} new mentions")
    assert len(rsps.calls) == 1 and [h.status for h in feed_server.hits_for("/feed.xml")] == [200]
    code, out, _ = run_cli(capsys, "--config", str(path), "mentions", "--format", "json")
    listed = json.loads(out)
    assert code == 0 and len(listed) == expected
    assert {m["source"] for m in listed} == {"x", "blogs"}
    assert {m["external_id"] for m in listed if m["source"] == "x"} == set(non_retweet_ids(page))
    assert {m["brand"] for m in listed} == {"Bouygues Telecom"}
    shown = sources_json(capsys, path)
    assert shown[("x", "search")]["status"] == shown[("blogs", url)]["status"] == "ok"
    assert shown[("x", "search")]["mentions"] == expected - 1 and shown[("blogs", url)]["mentions"] == 1
    assert TOKEN not in out + err and TOKEN not in database_text(db)


def test_fewer_reads_left_than_one_page_parks_the_source_with_the_reason(
    db: Database, configure: Callable[..., tuple[Path, Settings]], rsps: responses.RequestsMock, clock: Clock
) -> None:
    _, settings = configure(x_source(monthly_read_cap=150))
    with db.session() as session:
        state.add_reads(session, "x", clock(), 145)  # 5 left: less than X's smallest page (10)
    report = poll(settings, db, clock)
    assert len(rsps.calls) == 0
    assert report.streams[0].parked is not None
    assert "monthly read cap reached (145/150 posts read this month)" in report.streams[0].parked
    assert stream_state(db).parked_until == state.next_month(clock())


def test_library_users_debug_logs_never_show_the_token(
    db: Database,
    configure: Callable[..., tuple[Path, Settings]],
    rsps: responses.RequestsMock,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the CLI's redaction, tweepy's own logger still scrubs the bearer token."""
    _, settings = configure(x_source())
    rsps.add(responses.GET, SEARCH_URL, json={"meta": {"result_count": 0}}, status=200)
    with caplog.at_level(logging.DEBUG):
        poll(settings, db, clock)
    assert "Making API request" in caplog.text
    assert TOKEN not in caplog.text
