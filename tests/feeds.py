"""Feed documents for the tests, built in code so each test shows what it serves."""

from __future__ import annotations

import gzip
import html
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from monitor.collector import Collector, CycleReport
from monitor.config import Settings
from monitor.storage.db import Database

FIXTURES = Path(__file__).parent / "fixtures"


def seed_post() -> tuple[str, str]:
    """(title, HTML body) of the real French blog post the project was born from."""
    lines = (FIXTURES / "seed-bouygues-telecom-2010-08-04.txt").read_text(encoding="utf-8").splitlines()
    title = lines[4].strip()
    body = lines[5 : next(i for i, line in enumerate(lines) if line.startswith("Aucun commentaire"))]
    return title, "".join(f"<p>{html.escape(p.strip())}</p>" for p in body if p.strip())


def rss(items: list[dict[str, str]], title: str = "A blog") -> str:
    entries = "".join(
        "<item>"
        + "".join(f"<{key}>{escape(value)}</{key}>" for key, value in item.items() if key != "guid")
        + (f"<guid isPermaLink='false'>{escape(item['guid'])}</guid>" if "guid" in item else "")
        + "</item>"
        for item in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>{escape(title)}</title><link>https://blog.example/</link>"
        f"<description>d</description><language>en</language>{entries}</channel></rss>"
    )


def atom(entries: list[dict[str, str]], title: str = "An Atom blog") -> str:
    body = "".join(
        "<entry>"
        f"<id>{escape(e['id'])}</id><title>{escape(e['title'])}</title>"
        f"<updated>{e.get('updated', '2026-11-20T10:00:00Z')}</updated>"
        f"<link rel='alternate' href='{escape(e['link'])}'/>"
        f"<author><name>{escape(e.get('author', 'Anne'))}</name></author>"
        f"<content type='html'>{escape(e['content'])}</content>"
        "</entry>"
        for e in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{escape(title)}</title><id>urn:feed</id><updated>2026-11-20T10:00:00Z</updated>{body}</feed>"
    )


def blogger(entries: list[dict[str, str]]) -> str:
    """A Blogger-style Atom feed: blogger tag ids, openSearch counts, html content, replies links."""
    body = "".join(
        "<entry>"
        f"<id>tag:blogger.com,1999:blog-7310421.post-{e['post']}</id>"
        f"<published>{e['published']}</published><updated>{e['published']}</updated>"
        f"<title type='text'>{escape(e['title'])}</title>"
        f"<content type='html'>{escape(e['content'])}</content>"
        f"<link rel='replies' type='application/atom+xml' href='http://conso.blogspot.com/feeds/{e['post']}/comments/default'/>"
        f"<link rel='alternate' type='text/html' href='http://conso.blogspot.com/2010/08/{e['post']}.html'/>"
        f"<author><name>{escape(e['author'])}</name><email>noreply@blogger.com</email></author>"
        "</entry>"
        for e in entries
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:openSearch='http://a9.com/-/spec/opensearchrss/1.0/'"
        " xmlns:blogger='http://schemas.google.com/blogger/2008'>"
        "<id>tag:blogger.com,1999:blog-7310421</id><updated>2010-08-04T09:12:00.000+02:00</updated>"
        "<title type='text'>Chroniques d'un consommateur</title>"
        "<generator version='7.00' uri='http://www.blogger.com'>Blogger</generator>"
        f"<openSearch:totalResults>{len(entries)}</openSearch:totalResults>{body}</feed>"
    )


def gzip_bomb(size: int) -> Callable[[BaseHTTPRequestHandler], Any]:
    """A FeedServer route handler: a small gzip body that decodes to `size` bytes."""

    def handler(request: BaseHTTPRequestHandler) -> None:
        body = gzip.compress(b"<rss>" + b" " * size)
        request.send_response(200)
        request.send_header("Content-Type", "application/rss+xml")
        request.send_header("Content-Encoding", "gzip")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handler


def collect_once(settings: Settings, db: Database) -> CycleReport:
    """One collection cycle with a collector of its own, closed after."""
    collector = Collector(settings, db)
    try:
        return collector.collect()
    finally:
        collector.close()
