"""Many streams of a source fetched at once (`Source.fetch_many`): stored in order, one stream's
failure or slowness costs nobody else, unchanged feeds cost one statement, parked streams are not
fetched and a shutdown stops between streams. Real local HTTP server, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from monitor.collector import Collector
from monitor.config import Settings
from monitor.errors import RetriableSourceError
from monitor.feedserver import FeedServer
from monitor.mention import Mention
from monitor.sources.base import Batch, Source, SourceConfig, StreamRequest
from monitor.storage import queries, state
from monitor.storage.db import Database

from feeds import collect_once, gzip_bomb, rss


def feed(n: int) -> str:
    return rss([{"title": f"Bouygues Telecom panne {n}", "link": f"https://b.example/{n}", "guid": str(n)}])


def rss_settings(make_settings: Callable[..., Settings], urls: list[str], **source: Any) -> Settings:
    return make_settings(sources=[{"type": "rss", "name": "blogs", "urls": urls, "timeout": "1s", **source}])


def states(db: Database) -> dict[str, Any]:
    with db.session() as session:
        return {
            row.stream: {
                "cursor": dict(row.cursor or {}),
                "last_poll_at": row.last_poll_at,
                "last_ok_at": row.last_ok_at,
                "last_error": row.last_error,
                "errors": row.consecutive_errors,
                "next_poll_at": row.next_poll_at,
                "mentions_total": row.mentions_total,
                "warning": row.last_warning,
            }
            for row in state.all_states(session)
        }


def _sleeping(seconds: float, body: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def handler(request: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        request.send_response(200)
        request.send_header("Content-Type", "application/rss+xml")
        request.send_header("Content-Length", str(len(body.encode())))
        request.end_headers()
        request.wfile.write(body.encode())

    return handler


_gzip_bomb = gzip_bomb(20_000_000)


def test_many_feeds_stored_in_order_and_a_bad_or_slow_one_costs_nobody_else(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    bad = {
        5: "HTTP 500 from",
        12: "timed out after 1s",
        20: "larger than the 100000-byte cap",
        27: "HTTP 404",
    }
    urls = []
    for n in range(40):
        if n == 5:
            urls.append(feed_server.add(f"/f{n}", "oops", status=500))
        elif n == 12:
            urls.append(feed_server.add(f"/f{n}", handler=_sleeping(3, feed(n))))
        elif n == 20:
            urls.append(feed_server.add(f"/f{n}", handler=_gzip_bomb))
        elif n == 27:
            urls.append(feed_server.add(f"/f{n}", status=404))
        else:
            urls.append(feed_server.add(f"/f{n}", feed(n), content_type="application/rss+xml"))
    settings = rss_settings(make_settings, urls, max_bytes=100_000)
    started = time.monotonic()
    report = collect_once(settings, db)
    assert time.monotonic() - started < 8  # the 1 s deadline of the slow one held nobody back
    assert [line.stream for line in report.streams] == urls
    for n, line in enumerate(report.streams):
        if n in bad:
            assert bad[n] in (line.error or ""), (n, line.error)
        else:
            assert line.error is None and line.stored == 1, (n, line)
    with db.session() as session:
        assert queries.count_mentions(session) == 40 - len(bad)
    rows = states(db)
    assert all(rows[url]["errors"] == (1 if n in bad else 0) for n, url in enumerate(urls))
    assert all(rows[url]["cursor"].get("etag") for n, url in enumerate(urls) if n not in bad)

    # Second poll: every good feed answers 304; the bad ones fail again, each on its own.
    before = states(db)
    time.sleep(0.01)
    report = collect_once(settings, db)
    assert [line.stream for line in report.streams] == urls
    assert [n for n, line in enumerate(report.streams) if line.not_modified] == [
        n for n in range(40) if n not in bad
    ]
    after = states(db)
    for n, url in enumerate(urls):
        if n in bad:
            assert after[url]["errors"] == 2 and after[url]["cursor"] == {}
            continue
        assert after[url]["cursor"] == before[url]["cursor"]  # a 304 moves no cursor
        assert after[url]["mentions_total"] == 1
        assert after[url]["last_poll_at"] > before[url]["last_poll_at"]
        assert after[url]["last_ok_at"] == after[url]["last_poll_at"]
        assert after[url]["next_poll_at"] > after[url]["last_poll_at"]
    assert len(feed_server.hits_for("/f0")) == 2 and feed_server.hits_for("/f0")[1].status == 304


def test_a_304_clears_the_error_of_a_feed_that_failed_before(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    urls = [feed_server.add(f"/f{n}", feed(n), content_type="application/rss+xml") for n in range(3)]
    settings = rss_settings(make_settings, urls)
    collect_once(settings, db)
    body = feed_server.routes["/f1"]
    feed_server.add("/f1", "down", status=503)
    report = collect_once(settings, db)
    assert [bool(line.error) for line in report.streams] == [False, True, False]
    failed = states(db)[urls[1]]
    assert failed["errors"] == 1 and failed["last_error"]
    feed_server.routes["/f1"] = body  # back, unchanged: it answers 304 to the saved ETag
    report = collect_once(settings, db)
    assert [line.not_modified for line in report.streams] == [True, True, True] and not report.errors
    healed = states(db)[urls[1]]
    assert healed["errors"] == 0 and healed["last_error"] is None
    assert healed["last_ok_at"] == healed["last_poll_at"] > failed["last_poll_at"]
    assert healed["cursor"] == failed["cursor"] and healed["mentions_total"] == 1


def test_parked_feeds_are_not_fetched(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    urls = [feed_server.add(f"/f{n}", feed(n), content_type="application/rss+xml") for n in range(4)]
    settings = rss_settings(make_settings, urls)
    until = datetime.now(UTC) + timedelta(hours=1)
    with db.session() as session:
        state.park(session, "blogs", urls[2], "held by a test", until)
    report = collect_once(settings, db)
    assert [line.stream for line in report.streams] == urls
    assert report.streams[2].parked and "held by a test" in report.streams[2].parked
    assert feed_server.hits_for("/f2") == []
    assert [line.stored for line in report.streams] == [1, 1, 0, 1]
    assert states(db)[urls[2]]["next_poll_at"] == until


def test_a_shutdown_stops_between_feeds_and_leaves_the_rest_for_the_next_poll(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    urls = [feed_server.add(f"/f{n}", handler=_sleeping(0.05 * n, feed(n))) for n in range(12)]
    settings = rss_settings(make_settings, urls)
    collector = Collector(settings, db)
    source = collector.sources[0]
    fetch_many = source.fetch_many
    taken: list[str] = []

    def fetch_then_stop(requests: Any) -> Iterator[Any]:
        for outcome in fetch_many(requests):
            taken.append(outcome.stream)
            if len(taken) == 3:
                collector.stopping.set()  # SIGTERM while the third feed is being stored
            yield outcome

    source.fetch_many = fetch_then_stop  # type: ignore[method-assign,assignment]
    try:
        report = collector.poll(source)
    finally:
        collector.close()
    assert [line.stream for line in report.streams] == urls[:3] == taken
    assert [line.stored for line in report.streams] == [1, 1, 1]
    rows = states(db)
    assert all(rows[url]["last_poll_at"] is not None for url in urls[:3])
    assert all(rows[url]["last_poll_at"] is None and rows[url]["cursor"] == {} for url in urls[3:])
    report = collect_once(settings, db)  # the next poll takes them up
    assert [line.stored for line in report.streams] == [0] * 3 + [1] * 9


# --- the default `fetch_many`: threads over `fetch` -------------------------------------------


class ThreadedConfig(SourceConfig):
    type: str = "threaded"
    streams: tuple[str, ...] = ()


class ThreadedSource(Source):
    """A source without a `fetch_many` of its own: the default runs `fetch` in threads."""

    type = "threaded"
    Config = ThreadedConfig
    parallel_streams: ClassVar[bool] = True
    config: ThreadedConfig

    def __init__(self, config: ThreadedConfig) -> None:
        super().__init__(config)
        self.lock = threading.Lock()
        self.in_flight = self.most = 0

    def streams(self) -> list[str]:
        return list(self.config.streams)

    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.3 if stream == "slow" else 0.05)
            page = int(cursor.get("page", 0)) + 1
            yield Batch(stream, {"page": page}, [self.mention(f"{stream}-{page}")])
            if stream == "breaks":
                raise RetriableSourceError("page 2 failed")
        finally:
            with self.lock:
                self.in_flight -= 1

    def mention(self, external_id: str) -> Mention:
        return Mention(source=self.name, external_id=external_id, text=f"Bouygues Telecom {external_id}")


def test_the_default_fetch_many_runs_fetch_in_threads_and_keeps_order_and_partial_results(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    names = ["a", "slow", "breaks", "b", "c", "d"]
    source = ThreadedSource(ThreadedConfig(name="threaded", streams=tuple(names)))
    outcomes = list(source.fetch_many([StreamRequest(name, {}) for name in names]))
    assert [o.stream for o in outcomes] == names
    assert source.most >= 2  # fetched at once
    broken = outcomes[2]
    assert [b.cursor for b in broken.batches] == [{"page": 1}] and isinstance(
        broken.error, RetriableSourceError
    )
    assert all(o.error is None and len(o.batches) == 1 for n, o in enumerate(outcomes) if n != 2)

    # Through the collector: the first page of the broken stream is kept with its cursor.
    collector = Collector(make_settings(), db, sources=[source])
    try:
        report = collector.poll(source)
    finally:
        collector.close()
    assert [line.stream for line in report.streams] == names
    assert [line.stored for line in report.streams] == [1, 1, 1, 1, 1, 1]
    (failed,) = report.errors
    assert failed.stream == "breaks" and "page 2 failed" in (failed.error or "")
    rows = states(db)
    assert rows["breaks"]["cursor"] == {"page": 1} and rows["breaks"]["errors"] == 1


def test_closing_the_default_fetch_many_early_cancels_what_has_not_started(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    names = [f"s{n}" for n in range(40)]
    source = ThreadedSource(ThreadedConfig(name="threaded", streams=tuple(names)))
    outcomes = source.fetch_many([StreamRequest(name, {}) for name in names])
    assert next(outcomes).stream == "s0"
    started = time.monotonic()
    outcomes.close()
    assert time.monotonic() - started < 0.5  # only the ones already running are waited for


@pytest.mark.parametrize("count", [1, 600])
def test_record_not_modified_updates_only_the_named_streams(db: Database, count: int) -> None:
    streams = [f"https://feeds.example/{n}" for n in range(count)]
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    with db.session() as session:
        known = state.poll_states(session, "blogs", [*streams, "other"])
        assert set(known) == {*streams, "other"} and all(k.cursor == {} for k in known.values())
    with db.session() as session:
        for stream in [*streams, "other"]:
            state.record_success(session, "blogs", stream, {"etag": '"e"'}, now - timedelta(hours=1), 2)
            state.record_failure(session, "blogs", stream, "HTTP 503", now - timedelta(minutes=30))
        state.record_failure(session, "other-source", streams[0], "HTTP 503", now)
    with db.session() as session:
        state.record_not_modified(session, "blogs", streams, now, now + timedelta(minutes=15))
    with db.session() as session:
        rows = {(row.source, row.stream): row for row in state.all_states(session)}
        for stream in streams:
            row = rows[("blogs", stream)]
            assert row.cursor == {"etag": '"e"'} and row.mentions_total == 2
            assert row.last_poll_at == row.last_ok_at == now and row.next_poll_at == now + timedelta(
                minutes=15
            )
            assert row.last_error is None and row.consecutive_errors == 0 and row.last_warning is None
        assert rows[("blogs", "other")].consecutive_errors == 1
        assert rows[("other-source", streams[0])].consecutive_errors == 1
        known = state.poll_states(session, "blogs", streams[:1])
        assert known[streams[0]].cursor == {"etag": '"e"'} and known[streams[0]].parked_reason is None

    # Rows this session already holds (here: created, not yet written) are written first, then read again.
    with db.session() as session:
        state.poll_states(session, "new-source", ["https://feeds.example/new"])
        state.record_not_modified(session, "new-source", ["https://feeds.example/new"], now, now)
        row = state.get_state(session, "new-source", "https://feeds.example/new")
        assert row.last_ok_at == now and row.next_poll_at == now and row.cursor == {}
