"""RSS/Atom feeds (blogs, news searches, alert feeds) through feedparser.

Each feed URL is a stream with its own cursor (ETag / Last-Modified). feedparser only ever sees
bytes we fetched ourselves: handed a string, it would read a local file of that name.

Alert services (Google Alerts, Talkwalker Alerts) link every item through a tracking redirect
(`https://www.google.com/url?rct=j&sa=t&url=<article>&ct=ga&cd=…&usg=…`). The mention keeps the
article's own URL instead, and the publisher (the article's host) as its author, rather than one
"google.com" author for every article of every site.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import logging
import re
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qs, urlsplit

import feedparser
from pydantic import Field

from monitor.analysis.text import clean_whitespace, html_to_text
from monitor.confbase import Duration, HttpUrl
from monitor.errors import RetriableSourceError
from monitor.http import Fetcher, Response, raise_for_status, redact_url
from monitor.mention import Mention
from monitor.sources.base import Batch, Fetched, Source, SourceConfig, StreamRequest
from monitor.sources.feedxml import read_feed

log = logging.getLogger(__name__)

# A DOCTYPE, with any internal subset: entity declarations are how XML bombs and XXE get in.
_DOCTYPE = re.compile(rb"<!DOCTYPE[^\[>]*(?:\[.*?\]\s*)?>", re.IGNORECASE | re.DOTALL)
# What is left of a declaration the pattern above could not match whole (an unclosed one, a stray ENTITY).
_DECLARATION = re.compile(rb"<!(?:DOCTYPE|ENTITY)[^>]*>?", re.IGNORECASE)
_COMMENT = re.compile(rb"<!--.*?-->", re.DOTALL)
# Where the root element starts: the same test feedparser uses to find the prolog it reads entities from.
_ROOT = re.compile(rb"<\w")
_HARMLESS_BOZO = (feedparser.CharacterEncodingOverride,)
# Google's redirect lives at /url on google.com and its country domains (google.fr, google.co.uk...).
_GOOGLE_HOST = re.compile(r"^(?:www\.)?google\.(?:com?\.)?[a-z]{2,3}$")
_REDIRECT_PARAMS = ("url", "u", "q")  # where alert redirects carry the target
_ACCEPT = "application/atom+xml, application/rss+xml, application/xml;q=0.9, */*;q=0.5"
# Inline tags still there once the HTML is decoded: the HTML was escaped twice.
_ESCAPED_TAG = re.compile(r"</?(?:b|i|em|strong|u|span|font|a|br|p)(?:\s[^<>]*)?/?>", re.IGNORECASE)


class RssConfig(SourceConfig):
    type: Literal["rss"] = "rss"
    urls: tuple[HttpUrl, ...] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=20)
    max_bytes: int = Field(default=10_000_000, gt=0)
    max_redirects: int = Field(default=5, ge=0, le=20)


def _strip_declarations(body: bytes) -> bytes:
    """Drop every DOCTYPE and entity declaration from the prolog, and only from the prolog.

    A `<!DOCTYPE` quoted inside an entry (CDATA, escaped HTML) is content and stays as it is.
    Comments in the prolog go too: feedparser reads declarations even from inside them.
    """
    root = _ROOT.search(body)
    end = root.start() if root else len(body)
    head = _COMMENT.sub(b"", body[:end])
    while True:  # removing one declaration may join the pieces of another: go on until none is left
        stripped = _DECLARATION.sub(b"", _DOCTYPE.sub(b"", head))
        if stripped == head:
            return head + body[end:]
        head = stripped


def _defuse(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The body with no DOCTYPE or entity declaration left for feedparser to expand.

    Stripping works on the bytes, which finds declarations in any ASCII-compatible encoding. In
    UTF-16/32 (or EBCDIC) they are invisible there, so decode as feedparser would: if its UTF-8 text
    still declares something, hand it that text, stripped, with the charset now UTF-8.
    """
    body = _strip_declarations(body)
    probe: dict[str, Any] = {}
    text = feedparser.encodings.convert_to_utf8(dict(headers), body, probe)
    root = _ROOT.search(text)
    if not probe.get("encoding") or not _DECLARATION.search(text[: root.start() if root else len(text)]):
        return body, headers
    if "content-type" in headers:
        media_type = headers["content-type"].split(";", 1)[0].strip()
        headers = {**headers, "content-type": f"{media_type}; charset=utf-8"}
    return _strip_declarations(text), headers


def parse_feed(body: bytes, content_type: str | None, url: str) -> Any:
    """Parse fetched bytes; raise a SourceError naming the feed when nothing usable came out.

    Plain well-formed feeds are read by `feedxml` (expat, about 10x faster); feedparser reads the rest.
    """
    body = _strip_declarations(body)
    document = read_feed(body, content_type)
    if document is not None:
        return document
    body, headers = _defuse(body, {"content-type": content_type} if content_type else {})
    parsed = feedparser.parse(io.BytesIO(body), response_headers=headers, sanitize_html=True)
    if parsed.entries or (parsed.version and not parsed.bozo):
        return parsed
    if parsed.version and "undefined entity" in str(parsed.bozo_exception):
        return parsed  # an HTML entity (`&nbsp;`) in a feed with no items yet: empty, not broken
    shown = redact_url(url)
    if parsed.bozo and not isinstance(parsed.bozo_exception, _HARMLESS_BOZO):
        reason = str(parsed.bozo_exception) or type(parsed.bozo_exception).__name__
        if not parsed.version:
            raise RetriableSourceError(
                f"{shown} is not an RSS/Atom feed ({content_type or 'no Content-Type'}): {reason}"
            )
        raise RetriableSourceError(f"malformed feed at {shown}: {reason}")
    raise RetriableSourceError(f"{shown} is not an RSS/Atom feed ({content_type or 'no Content-Type'})")


def _html_to_text(html: str) -> str:
    """Plain text, also from HTML escaped twice (`&lt;b&gt;Brand&lt;/b&gt;`, as some alert feeds send)."""
    text = html_to_text(html)
    return html_to_text(text) if _ESCAPED_TAG.search(text) else text


def _entry_datetime(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (TypeError, ValueError, OverflowError):
                continue
    return None


def _entry_text(entry: Any) -> str:
    for block in entry.get("content") or ():
        value = block.get("value") or ""
        if value.strip():
            return (
                _html_to_text(value) if "html" in (block.get("type") or "html") else clean_whitespace(value)
            )
    detail = entry.get("summary_detail") or {}
    summary = entry.get("summary") or ""
    if "html" in (detail.get("type") or "text/html"):
        return _html_to_text(summary)
    return clean_whitespace(summary)


def _author(node: Any) -> str | None:
    """The author's name, without the e-mail feedparser appends ("Jean (noreply@blogger.com)")."""
    detail = node.get("author_detail") or {}
    name = (detail.get("name") or node.get("author") or "").strip()
    return name or None


def _is_alert_redirect(parts: SplitResult) -> bool:
    host = (parts.hostname or "").lower()
    if _GOOGLE_HOST.match(host):
        return bool(parts.path == "/url")
    return host == "talkwalker.com" or host.endswith(".talkwalker.com")


def unwrap_redirect(link: str) -> str:
    """The article behind an alert service's tracking redirect; any other link as it is.

    Only Google's `/url` and Talkwalker hosts are unwrapped, and only to an absolute http(s) URL
    found in their `url`, `u` or `q` parameter: a `javascript:` or relative target keeps the link.
    """
    for _hop in range(3):  # a redirect wrapped in another one
        lowered = link.lower()
        if "google." not in lowered and "talkwalker.com" not in lowered:
            return link  # the common case, decided without parsing the URL
        try:
            parts = urlsplit(link.strip())
            if not _is_alert_redirect(parts):
                return link
            params = parse_qs(parts.query)
        except ValueError:
            return link
        targets = [v.strip() for name in _REDIRECT_PARAMS for v in params.get(name, ())]
        target = next((t for t in targets if _is_http_url(t)), None)
        if target is None:
            return link
        link = target
    return link


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


@lru_cache(maxsize=4096)
def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


@lru_cache(maxsize=4096)
def _is_alert_feed(feed_url: str) -> bool:
    """A Google Alerts or Talkwalker Alerts feed: each item comes from a different site."""
    parts = urlsplit(feed_url)
    host = (parts.hostname or "").lower()
    google = bool(_GOOGLE_HOST.match(host)) and parts.path.startswith("/alerts/feeds/")
    return google or host == "talkwalker.com" or host.endswith(".talkwalker.com")


def entry_to_mention(source: str, feed_url: str, feed: Any, entry: Any) -> Mention:
    """One feed entry as a Mention. Identity: entry id, else link, else a hash of its content.

    Alert redirects are unwrapped first (link, and an id that is such a link), so the identity
    does not change when the service rotates its tracking parameters.
    """
    title = _html_to_text(entry.get("title") or "") or None
    text = _entry_text(entry)
    raw_link = (entry.get("link") or "").strip()
    link = unwrap_redirect(raw_link) or None
    entry_id = (entry.get("id") or "").strip()
    external_id = unwrap_redirect(entry_id) or link
    if not external_id:
        digest = hashlib.sha256(f"{title or ''}\n{text}".encode()).hexdigest()
        external_id = f"sha256:{digest}"
    author = _author(entry) or _author(feed)
    host = _host(feed_url)
    if link and (link != raw_link or _is_alert_feed(feed_url)):
        host = (urlsplit(link).hostname or host).lower()  # an alert's author is the article's site
    language = (entry.get("language") or feed.get("language") or "").split("-")[0].lower() or None
    return Mention(
        source=source,
        external_id=external_id[:512],
        text=text,
        url=link,
        title=title,
        author_id=f"{host}/{author or ''}",
        author_name=author,
        lang=language,
        published_at=_entry_datetime(entry),
    )


def _conditional_headers(cursor: dict[str, Any]) -> dict[str, str]:
    """The request's headers: the saved validators make it a conditional GET (304 if unchanged)."""
    headers = {"Accept": _ACCEPT}
    if cursor.get("etag"):
        headers["If-None-Match"] = cursor["etag"]
    if cursor.get("last_modified"):
        headers["If-Modified-Since"] = cursor["last_modified"]
    return headers


class RssSource(Source):
    type = "rss"
    Config = RssConfig
    parallel_streams = True
    config: RssConfig

    def __init__(self, config: RssConfig, brands: Sequence[Any] = (), fetcher: Fetcher | None = None) -> None:
        super().__init__(config, brands)
        self._fetcher = fetcher or Fetcher(
            timeout=config.timeout.total_seconds(),
            max_bytes=config.max_bytes,
            max_redirects=config.max_redirects,
        )

    def streams(self) -> list[str]:
        return list(dict.fromkeys(self.config.urls))

    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        yield self._batch(stream, cursor, self._fetcher.get(stream, _conditional_headers(cursor)))

    def fetch_many(self, requests: Sequence[StreamRequest]) -> Generator[Fetched, None, None]:
        """Conditional GETs of many feeds at once on the fetcher's event loop (within its
        connection limits and window), each response parsed here, in order, as it is asked for."""
        outcomes = self._fetcher.get_many([(r.stream, _conditional_headers(r.cursor)) for r in requests])
        try:
            for request, outcome in zip(requests, outcomes, strict=True):
                try:
                    if isinstance(outcome, Exception):
                        raise outcome
                    batch = self._batch(request.stream, request.cursor, outcome)
                except Exception as exc:  # noqa: BLE001 - this stream's error; the others go on
                    yield Fetched(request.stream, [], exc)
                    continue
                yield Fetched(request.stream, [batch])
        finally:
            outcomes.close()  # cancels what is still being fetched

    def _batch(self, stream: str, cursor: dict[str, Any], response: Response) -> Batch:
        """A feed's response as a batch: nothing for a 304, else its entries and the new validators."""
        if response.status == 304:
            return Batch(stream=stream, cursor=cursor, not_modified=True)
        raise_for_status(response)
        parsed = parse_feed(response.body, response.headers.get("content-type"), stream)
        if parsed.bozo and not isinstance(parsed.bozo_exception, _HARMLESS_BOZO):
            log.warning(
                "feed %s is not well-formed (%s); kept the %d entries recovered",
                redact_url(stream),
                parsed.bozo_exception,
                len(parsed.entries),
            )
        mentions = [entry_to_mention(self.name, stream, parsed.feed, entry) for entry in parsed.entries]
        mentions = [m for m in mentions if m.text or m.title]
        next_cursor = {
            key: value
            for key, value in (
                ("etag", response.headers.get("etag")),
                ("last_modified", response.headers.get("last-modified")),
            )
            if value
        }
        return Batch(stream=stream, cursor=next_cursor, mentions=mentions)

    def close(self) -> None:
        self._fetcher.close()
