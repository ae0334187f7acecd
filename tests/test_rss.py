"""The RSS/Atom collector against a real local HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from monitor.cli import main
from monitor.collector import Collector
from monitor.config import Settings
from monitor.errors import SourceError
from monitor.feedserver import FeedServer
from monitor.sources import rss as rss_module
from monitor.storage import queries, state
from monitor.storage.db import Database

from feeds import atom, blogger, gzip_bomb, rss, seed_post

ENGLISH = rss(
    [
        {
            "title": "Bouygues Telecom roaming: still waiting for my refund",
            "link": "https://blog.example/refund",
            "description": "<p>Support <b>never</b> calls back &amp; I'm fed up.</p><script>alert(1)</script>",
            "pubDate": "Mon, 02 Nov 2026 10:00:00 GMT",
            "dc:creator": "Alice",
            "guid": "refund-1",
        },
        {
            "title": "My packing list",
            "link": "https://blog.example/packing",
            "description": "Nothing about phones.",
        },
    ]
)
ATOM = atom(
    [
        {
            "id": "urn:post:1",
            "title": "BouyguesTelecom 5G box review",
            "link": "https://atom.example/5g",
            "content": "<div>Works fine.</div>",
        },
        {
            "id": "urn:post:2",
            "title": "Bouygues Construction opens a stadium",
            "link": "https://atom.example/stadium",
            "content": "<p>Concrete news.</p>",
        },
    ]
)


def blogger_feed() -> str:
    title, body = seed_post()
    return blogger(
        [
            {
                "post": "1001",
                "published": "2010-08-04T09:12:00.000+02:00",
                "title": title,
                "content": body,
                "author": "Jean-Marc",
            }
        ]
    )


def collect(settings: Settings, db: Database) -> Any:
    collector = Collector(settings, db)
    try:
        return collector.collect()
    finally:
        collector.close()


def rss_settings(make_settings: Callable[..., Settings], *urls: str, **source: Any) -> Settings:
    return make_settings(sources=[{"type": "rss", "name": "blogs", "urls": list(urls), **source}])


def mentions_by_id(db: Database) -> dict[str, dict[str, Any]]:
    with db.session() as session:
        return {m["external_id"]: m for m in queries.list_mentions(session)}


def test_collects_rss_atom_and_blogger_feeds(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    urls = [
        feed_server.add("/rss", ENGLISH, content_type="application/rss+xml"),
        feed_server.add("/atom", ATOM),
        feed_server.add("/blogger", blogger_feed()),
    ]
    report = collect(rss_settings(make_settings, *urls), db)
    assert not report.errors
    found = mentions_by_id(db)
    assert set(found) == {"refund-1", "urn:post:1", "tag:blogger.com,1999:blog-7310421.post-1001"}
    refund = found["refund-1"]
    assert refund["brand"] == "Bouygues Telecom"
    assert refund["text"] == "Support never calls back & I'm fed up."  # HTML stripped, script dropped
    assert refund["url"] == "https://blog.example/refund"
    assert refund["author"] == "Alice" and refund["author_id"] == "127.0.0.1/Alice"
    assert refund["published_at"] == datetime(2026, 11, 2, 10, tzinfo=UTC)
    seed = found["tag:blogger.com,1999:blog-7310421.post-1001"]
    assert seed["title"].startswith("Bouygues Télécom : chronique d'un divorce annoncé")
    assert "En conclusion : satisfaction des deux parties !" in seed["text"]
    assert seed["author"] == "Jean-Marc"  # not "Jean-Marc (noreply@blogger.com)"
    assert seed["url"] == "http://conso.blogspot.com/2010/08/1001.html"
    assert seed["published_at"] == datetime(2010, 8, 4, 7, 12, tzinfo=UTC)
    assert report.totals.unmatched == 2  # the packing list and Bouygues Construction
    for hit in feed_server.hits:
        assert hit.headers["User-Agent"].startswith("monitor/")


def test_second_poll_is_conditional_and_parses_nothing(
    feed_server: FeedServer,
    db: Database,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = feed_server.add("/rss", ENGLISH, content_type="application/rss+xml")
    settings = rss_settings(make_settings, url)
    collect(settings, db)
    parses: list[object] = []
    real_parse = rss_module.feedparser.parse
    monkeypatch.setattr(
        rss_module.feedparser, "parse", lambda *a, **k: parses.append(a) or real_parse(*a, **k)
    )
    report = collect(settings, db)
    assert report.totals.stored == 0 and report.streams[0].not_modified
    assert parses == []
    second = feed_server.hits_for("/rss")[1]
    assert second.status == 304
    assert second.headers["If-None-Match"] == feed_server.routes["/rss"].etag
    assert second.headers["If-Modified-Since"] == feed_server.routes["/rss"].last_modified
    assert len(mentions_by_id(db)) == 1


def test_last_modified_alone_is_used_when_there_is_no_etag(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    url = feed_server.add("/rss", ENGLISH, content_type="application/rss+xml")
    settings = rss_settings(make_settings, url)
    route = feed_server.routes["/rss"]
    route.headers["ETag"] = ""  # the server sends no usable ETag
    collect(settings, db)
    with db.session() as session:
        assert state.load_cursor(session, "blogs", url) == {"last_modified": route.last_modified}
    collect(settings, db)
    assert [h.status for h in feed_server.hits_for("/rss")] == [200, 304]


def test_changed_feed_stores_only_the_new_entries(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    first = {
        "title": "Bouygues Telecom outage",
        "link": "https://b.example/1",
        "guid": "1",
        "description": "Down.",
    }
    second = {
        "title": "Bouygues Telecom outage again",
        "link": "https://b.example/2",
        "guid": "2",
        "description": "Down again.",
    }
    url = feed_server.add("/rss", rss([first]), content_type="application/rss+xml")
    settings = rss_settings(make_settings, url)
    assert collect(settings, db).totals.stored == 1
    feed_server.add("/rss", rss([second, first]), content_type="application/rss+xml")
    report = collect(settings, db)
    assert (report.totals.stored, report.totals.duplicates) == (1, 1)  # the old entry is known
    assert set(mentions_by_id(db)) == {"1", "2"}


def test_entry_identity_falls_back_from_id_to_link_to_content_hash(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    items = [
        {"title": "Bouygues Telecom a", "link": "https://b.example/a", "guid": "id-a"},
        {"title": "Bouygues Telecom b", "link": "https://b.example/b"},
        {"title": "Bouygues Telecom c", "description": "no id, no link"},
    ]
    url = feed_server.add("/rss", rss(items), content_type="application/rss+xml")
    collect(rss_settings(make_settings, url), db)
    ids = set(mentions_by_id(db))
    assert "id-a" in ids and "https://b.example/b" in ids
    (hashed,) = ids - {"id-a", "https://b.example/b"}
    assert hashed.startswith("sha256:") and len(hashed) == len("sha256:") + 64


def _slow(request: BaseHTTPRequestHandler) -> None:
    time.sleep(2)
    request.send_response(200)
    request.end_headers()


def _slow_body(request: BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "application/rss+xml")
    request.send_header("Content-Length", "100000")
    request.end_headers()
    for _ in range(40):
        request.wfile.write(b" " * 10)
        request.wfile.flush()
        time.sleep(0.1)


def _reset(request: BaseHTTPRequestHandler) -> None:
    request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    request.connection.close()
    request.close_connection = True


_gzip_bomb = gzip_bomb(5_000_000)


BROKEN: dict[str, tuple[dict[str, Any], str]] = {
    "timeout": ({"handler": _slow}, "timed out after 0.5s"),
    "slow body": ({"handler": _slow_body}, "timed out after 0.5s"),
    "not found": ({"status": 404, "body": "gone"}, "HTTP 404 from"),
    "server error": ({"status": 500, "body": "oops"}, "HTTP 500 from"),
    "html page": (
        {"body": "<html><body><h1>Maintenance</h1></body></html>", "content_type": "text/html"},
        "is not an RSS/Atom feed (text/html)",
    ),
    "malformed xml": (
        {"body": '<?xml version="1.0"?><rss version="2.0"><channel><title>B</title><ite'},
        "malformed feed at",
    ),
    "wrong encoding": (
        {"body": ENGLISH, "content_type": "application/rss+xml; charset=utf-16"},
        "is not an RSS/Atom feed",
    ),
    "connection reset": ({"handler": _reset}, "network error fetching"),
    "redirect loop": (
        {"status": 302, "headers": {"Location": "/broken"}},
        "too many redirects (more than 5)",
    ),
    "redirect to file": (
        {"status": 301, "headers": {"Location": "file:///etc/passwd"}},
        "refused to fetch 'file:///etc/passwd'",
    ),
    "oversized": ({"body": ENGLISH + " " * 3000}, "larger than the 2000-byte cap"),
    "gzip bomb": ({"handler": _gzip_bomb}, "larger than the 2000-byte cap"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_feed_is_recorded_and_the_cycle_goes_on(
    kind: str,
    feed_server: FeedServer,
    db: Database,
    db_url: str,
    make_settings: Callable[..., Settings],
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options, expected = BROKEN[kind]
    good = feed_server.add("/good", ATOM)
    broken = feed_server.add("/broken", **options)
    max_bytes = 2000 if kind in ("oversized", "gzip bomb") else 1_000_000
    settings = make_settings(
        sources=[
            {"type": "rss", "name": "broken", "urls": [broken], "timeout": "500ms", "max_bytes": max_bytes},
            {"type": "rss", "name": "good", "urls": [good]},
        ]
    )
    report = collect(settings, db)
    (error,) = report.errors
    assert error.source == "broken" and expected in (error.error or "")
    assert set(mentions_by_id(db)) == {"urn:post:1"}
    with db.session() as session:
        rows = {row.source: row for row in state.all_states(session)}
        assert expected in (rows["broken"].last_error or "")
        assert rows["broken"].cursor == {} and rows["broken"].consecutive_errors == 1
        assert rows["good"].last_error is None and rows["good"].last_ok_at is not None
    # The error is visible to the user.
    config = tmp_path / "monitor.yaml"
    config.write_text(json.dumps(settings.model_dump(mode="json", by_alias=True, exclude_none=True)))
    capsys.readouterr()
    assert main(["--config", str(config), "sources", "--format", "json"]) == 0
    listed = {row["source"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["broken"]["status"] == "error", listed["broken"]
    assert expected in listed["broken"]["last_error"]
    assert listed["good"]["status"] == "ok" and listed["good"]["mentions"] == 1


def test_failing_feed_recovers_without_loss_or_duplicates(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    first = {"title": "Bouygues Telecom: no signal", "link": "https://b.example/1", "guid": "1"}
    second = {"title": "Bouygues Telecom: still no signal", "link": "https://b.example/2", "guid": "2"}
    url = feed_server.add("/rss", rss([first]), content_type="application/rss+xml")
    settings = rss_settings(make_settings, url)
    collect(settings, db)
    with db.session() as session:
        cursor_before = state.load_cursor(session, "blogs", url)
    assert cursor_before.get("etag")

    feed_server.add("/rss", "down for maintenance", status=503)
    report = collect(settings, db)
    assert report.errors and "HTTP 503" in (report.errors[0].error or "")
    with db.session() as session:
        assert state.load_cursor(session, "blogs", url) == cursor_before  # the cursor did not move
        assert queries.count_mentions(session) == 1  # nothing stored was lost

    feed_server.add("/rss", rss([second, first]), content_type="application/rss+xml")
    report = collect(settings, db)
    assert not report.errors and report.totals.stored == 1
    assert set(mentions_by_id(db)) == {"1", "2"}
    with db.session() as session:
        (row,) = state.all_states(session)
        assert row.last_error is None and row.consecutive_errors == 0 and row.mentions_total == 2
        assert row.cursor["etag"] == feed_server.routes["/rss"].etag


def test_collect_cli_exits_1_when_a_stream_failed(
    feed_server: FeedServer, db_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    good = feed_server.add("/good", ATOM)
    broken = feed_server.add("/broken", status=500)
    config = tmp_path / "monitor.yaml"
    config.write_text(
        json.dumps(
            {
                "database": db_url,
                "brands": [{"name": "Bouygues Telecom", "aliases": ["BouyguesTelecom"]}],
                "sources": [{"type": "rss", "name": "blogs", "urls": [good, broken]}],
            }
        )
    )
    assert main(["--config", str(config), "collect", "--once"]) == 1
    captured = capsys.readouterr()
    assert "collected 1 new mentions" in captured.out
    assert f"error blogs [{broken}]: HTTP 500 from {broken}" in captured.err


def test_feedparser_never_reads_a_local_path() -> None:
    with pytest.raises(SourceError, match="not an RSS/Atom feed"):
        rss_module.parse_feed(b"/etc/passwd", "text/plain", "http://example.com/feed")


def test_internal_entities_are_not_expanded() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "' + b"A" * 1000 + b'">]>'
        b'<rss version="2.0"><channel><title>t</title><item><title>Bouygues Telecom '
        + b"&a;" * 1000
        + b"</title><guid>1</guid></item></channel></rss>"
    )
    parsed = rss_module.parse_feed(bomb, "application/rss+xml", "http://example.com/feed")
    assert len(parsed.entries[0].title) < 10_000


def test_feeds_of_a_source_are_fetched_concurrently_and_stored_in_order(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    import threading

    lock = threading.Lock()
    in_flight = {"now": 0, "most": 0}

    def slow_feed(n: int) -> Callable[[BaseHTTPRequestHandler], None]:
        body = rss(
            [{"title": f"Bouygues Telecom panne {n}", "link": f"https://b.example/{n}", "guid": str(n)}]
        )

        def handler(request: BaseHTTPRequestHandler) -> None:
            with lock:
                in_flight["now"] += 1
                in_flight["most"] = max(in_flight["most"], in_flight["now"])
            time.sleep(0.3)  # a slow site: the others must not wait for it
            with lock:
                in_flight["now"] -= 1
            request.send_response(200)
            request.send_header("Content-Type", "application/rss+xml")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body.encode())

        return handler

    urls = [feed_server.add(f"/slow{n}", handler=slow_feed(n)) for n in range(6)]
    report = collect(rss_settings(make_settings, *urls), db)
    assert not report.errors and report.totals.stored == 6
    assert [line.stream for line in report.streams] == urls  # stored stream by stream, in order
    assert in_flight["most"] >= 2


def test_feeds_stored_together_in_one_transaction_fall_back_to_one_by_one_when_that_fails(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    """Clean feed responses are stored in groups (one analysis pass, one commit). A response that
    fails the group's transaction costs only its own stream: the others are stored, each with its
    cursor, and the failing stream records its error and keeps its old cursor for the next poll."""
    from monitor.analysis.enrich import Analyzer
    from monitor.pipeline import Pipeline

    bodies = {
        n: rss([{"title": f"Bouygues Telecom {word} {n}", "link": f"https://b.example/{n}", "guid": str(n)}])
        for n, word in enumerate(["panne", "réseau", "POISON", "fibre", "box"])
    }
    urls = [feed_server.add(f"/g{n}", body, content_type="application/rss+xml") for n, body in bodies.items()]
    settings = rss_settings(make_settings, *urls)
    analyzer = Analyzer.for_settings(settings)
    calls: list[int] = []

    def enrich(mentions: list[Any]) -> list[Any]:
        calls.append(len(mentions))
        if any("POISON" in (m.title or "") for m in mentions):
            raise RuntimeError("cannot analyse this post")
        return analyzer(mentions)

    collector = Collector(settings, db, pipeline=Pipeline(settings, enrichers=[enrich]))
    try:
        report = collector.collect()
    finally:
        collector.close()
    assert calls[0] == 5  # the five responses went to the analysis as one batch first
    assert [line.stream for line in report.streams] == urls
    assert [line.stored for line in report.streams] == [1, 1, 0, 1, 1]
    (failed,) = report.errors
    assert failed.stream == urls[2] and "RuntimeError" in (failed.error or "")
    assert sorted(mentions_by_id(db)) == ["0", "1", "3", "4"]
    with db.session() as session:
        cursors = {url: state.get_state(session, "blogs", url).cursor for url in urls}
    assert not cursors[urls[2]]
    assert all((cursors[url] or {}).get("etag") for n, url in enumerate(urls) if n != 2)

    # Grouped or not, every stored post went through the whole path once.
    report = collect(settings, db)  # the real analyzer now: the poisoned post is stored too
    assert not report.errors
    assert sorted(mentions_by_id(db)) == ["0", "1", "2", "3", "4"]
