"""Bluesky search source against a local XRPC server (the atproto SDK is httpx-based: no `responses`).

The server (`FakeBluesky`) answers the endpoints the source uses with the shapes of Bluesky's API,
built from tests/fixtures/bluesky/ (a searchPosts page, getProfiles, createSession, error bodies):
sessions with JWT-shaped tokens that expire, createSession's didDoc pointing the SDK at "its PDS"
(this server), searchPosts newest first by sortAt with `since` and offset cursors, getProfiles
refusing more than 25 actors, and scripted failures. No network is ever used.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from atproto_client.client.methods_mixin.time import TimeMethodsMixin
from conftest import BRAND
from sqlalchemy import select

from monitor.collector import Collector
from monitor.config import Settings, settings_from_dict
from monitor.errors import AccessRefusedError, FatalSourceError, RetriableSourceError, SourceError
from monitor.sources.base import Batch
from monitor.sources.bluesky import (
    BlueskyConfig,
    BlueskySource,
    conversation_key,
    default_queries,
    post_to_mention,
)
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow, SourceStateRow

FIXTURES = Path(__file__).parent / "fixtures" / "bluesky"
HANDLE = "monitor-bot.bsky.social"
APP_PASSWORD = "k7qe-2vxd-mn4r-wj8a"
ACCESS_TTL = 7200  # seconds
QUERY = '"Bouygues Telecom"'
STREAM = f"search:{QUERY}"
URIS = [
    "at://did:plc:u7kzq2m4xw3bnc5yrde6hflp/app.bsky.feed.post/3lbq7vxk2ms2c",  # Claire, newest
    "at://did:plc:3fjw5yq7nla2xkc4oz6rmvbd/app.bsky.feed.post/3lbq6zt4fy22o",  # Tom, a reply to Claire
    "at://did:plc:k2vhd7ur4zjqyl3e5tgw6onx/app.bsky.feed.post/3lbq4rmuwbc2h",  # Sam, English, image
    "at://did:plc:wq4m2bx6yrz7ntl5kcd3vhea/app.bsky.feed.post/3lbq3a2h5vk2x",  # handle.invalid, no langs
    "at://did:plc:bt6yq3xkz4lmw2d7rnc5oheu/app.bsky.feed.post/3lbq2khxgdk2s",  # the brand's account
]
# After a poll that saw the fixture page: 5 minutes behind Claire's indexedAt, her post seen.
WINDOW = {"since": "2026-11-20T09:53:11.187Z", "seen": {URIS[0]: "2026-11-20T09:58:11.187Z"}}
FLOOR = "2026-11-20T09:48:11.187Z"  # the `since` sent to search: 5 more minutes, for sortAt


@cache
def _read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture(name: str) -> Any:
    """A fresh (mutable) copy of one recorded-shape payload."""
    return copy.deepcopy(json.loads(_read(name)))


def error(name: str) -> dict[str, str]:
    return dict(fixture("errors.json")[name])


def fixture_posts() -> list[dict[str, Any]]:
    return list(fixture("search_posts.json")["posts"])


def new_post(
    rkey: str, indexed: str, *, created: str | None = None, author: int = 0, text: str = ""
) -> dict[str, Any]:
    """Another post shaped like the fixture's first, by the fixture's `author`-th author."""
    post = fixture_posts()[author]
    did = post["author"]["did"]
    post["uri"] = f"at://{did}/app.bsky.feed.post/{rkey}"
    post["cid"] = f"bafyrei{rkey}"
    post["indexedAt"] = indexed
    post["record"] = {
        "$type": "app.bsky.feed.post",
        "createdAt": created or indexed,
        "langs": ["fr"],
        "text": text or f"Encore un souci avec Bouygues Telecom ({rkey})",
    }
    return post


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- the local Bluesky ------------------------------------------------------------------------


@dataclass
class Scripted:
    status: int
    body: bytes
    headers: dict[str, str]
    content_type: str
    delay: float
    cursor: str | None  # only for the request of this page cursor (None: any)


@dataclass
class Call:
    nsid: str
    params: dict[str, list[str]]
    auth: str | None
    body: dict[str, Any] | None

    def param(self, name: str) -> str | None:
        return self.params.get(name, [None])[-1]


@dataclass
class FakeBluesky:
    url: str = ""
    password: str = APP_PASSWORD
    posts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # query -> posts
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # did -> profile
    page_size: int = 100
    honour_since: bool = True
    refresh_refused: bool = False
    offset: timedelta = timedelta(0)  # the server's clock runs this far ahead (time passing)
    calls: list[Call] = field(default_factory=list)
    scripted: dict[str, list[Scripted]] = field(default_factory=lambda: defaultdict(list))
    access: dict[str, datetime] = field(default_factory=dict)  # valid access token -> expiry
    refresh: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)  # every token ever given out
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def fail(
        self,
        nsid: str,
        status: int,
        body: dict[str, Any] | str | bytes,
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json; charset=utf-8",
        times: int = 1,
        delay: float = 0.0,
        when_cursor: str | None = None,
    ) -> None:
        """The next `times` calls of `nsid` get this answer instead of the normal one."""
        raw = (
            json.dumps(body).encode()
            if isinstance(body, dict)
            else body.encode()
            if isinstance(body, str)
            else body
        )
        self.scripted[nsid].extend(
            Scripted(status, raw, headers or {}, content_type, delay, when_cursor) for _ in range(times)
        )

    def serve(self, posts: list[dict[str, Any]], query: str = QUERY) -> None:
        self.posts[query] = posts

    def expire_sessions(self) -> None:
        """The server forgets every access token (say, a deploy): they now get ExpiredToken."""
        self.access.clear()

    def nsids(self) -> list[str]:
        return [c.nsid.rsplit(".", 1)[-1] for c in self.calls]

    def searches(self) -> list[Call]:
        return [c for c in self.calls if c.nsid == "app.bsky.feed.searchPosts"]

    def session(self) -> dict[str, Any]:
        """createSession's (and refreshSession's) answer, with new tokens."""
        body = fixture("create_session.json")
        body["didDoc"]["service"][0]["serviceEndpoint"] = self.url  # "the PDS" is this server too
        body["accessJwt"], body["refreshJwt"] = self._tokens(body["did"])
        return body

    def _tokens(self, did: str) -> tuple[str, str]:
        """A new access JWT (valid 2 hours, as on bsky.social) and refresh JWT; the SDK reads `exp`."""
        now = int(self.now().timestamp())
        access = {
            "scope": "com.atproto.appPass",
            "sub": did,
            "iat": now,
            "exp": now + ACCESS_TTL,
            "aud": "did:web:morel.us-east.host.bsky.network",
            "jti": secrets.token_hex(8),
        }
        refresh = {
            "scope": "com.atproto.refresh",
            "sub": did,
            "aud": "did:web:bsky.social",
            "jti": secrets.token_hex(16),
            "iat": now,
            "exp": now + 90 * 86400,
        }
        signature = "c2lnbmF0dXJl"
        access_jwt = f"{b64({'typ': 'at+jwt', 'alg': 'ES256K'})}.{b64(access)}.{signature}"
        refresh_jwt = f"{b64({'typ': 'refresh+jwt', 'alg': 'ES256K'})}.{b64(refresh)}.{signature}"
        self.access[access_jwt] = self.now() + timedelta(seconds=ACCESS_TTL)
        self.refresh.add(refresh_jwt)
        self.issued += [access_jwt, refresh_jwt]
        return access_jwt, refresh_jwt

    def handle(self, nsid: str, call: Call) -> tuple[int, Any, dict[str, str]]:
        token = (call.auth or "").removeprefix("Bearer ")
        if nsid == "com.atproto.server.createSession":
            body = call.body or {}
            if body.get("identifier") != HANDLE or body.get("password") != self.password:
                return 401, error("auth_failed"), {}
            return 200, self.session(), {}
        if nsid == "com.atproto.server.refreshSession":
            if self.refresh_refused or token not in self.refresh:
                return 400, error("expired_token"), {}
            self.refresh.discard(token)
            body = self.session()
            del body["email"], body["emailConfirmed"], body["emailAuthFactor"]
            return 200, body, {}
        if not token:
            return 401, error("auth_missing"), {}
        if token not in self.access or self.access[token] <= self.now():
            return 400, error("expired_token"), {}
        if nsid == "app.bsky.feed.searchPosts":
            return self._search(call)
        if nsid == "app.bsky.actor.getProfiles":
            actors = call.params.get("actors", [])
            if len(actors) > 25:
                return 400, error("too_many_actors"), {}
            return 200, {"profiles": [self.profiles[a] for a in actors if a in self.profiles]}, {}
        return 404, {"error": "MethodNotImplemented", "message": "Method Not Implemented"}, {}

    def _search(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        query, cursor = call.param("q"), call.param("cursor") or "0"
        if not query:
            return 400, error("bad_query"), {}
        if not cursor.isdigit():
            return 400, error("bad_cursor"), {}

        def sort_at(post: dict[str, Any]) -> datetime:
            created = post["record"].get("createdAt") or post["indexedAt"]
            return min(datetime.fromisoformat(created), datetime.fromisoformat(post["indexedAt"]))

        found = sorted(self.posts.get(query, []), key=sort_at, reverse=True)
        since = call.param("since")
        if since and self.honour_since:
            found = [p for p in found if sort_at(p) >= datetime.fromisoformat(since)]
        start = int(cursor)
        size = min(int(call.param("limit") or 25), self.page_size)
        page = found[start : start + size]
        body: dict[str, Any] = {"posts": page, "hitsTotal": len(found)}
        if start + size < len(found):
            body["cursor"] = str(start + size)
        return 200, body, {}


@pytest.fixture
def bsky() -> Iterator[FakeBluesky]:
    server_state = FakeBluesky()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            nsid = parts.path.removeprefix("/xrpc/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            call = Call(
                nsid,
                parse_qs(parts.query),
                self.headers.get("Authorization"),
                json.loads(raw) if raw else None,
            )
            with server_state.lock:
                server_state.calls.append(call)
                queue = server_state.scripted.get(nsid) or []
                match = [i for i, s in enumerate(queue) if s.cursor in (None, call.param("cursor"))]
                scripted = queue.pop(match[0]) if match else None
            if scripted is not None:
                time.sleep(scripted.delay)
                self._send(scripted.status, scripted.body, scripted.content_type, scripted.headers)
                return
            with server_state.lock:
                status, body, headers = server_state.handle(nsid, call)
            self._send(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}"
    server_state.profiles = {p["did"]: p for p in fixture("get_profiles.json")["profiles"]}
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def make_source(bsky: FakeBluesky, brands: tuple[Any, ...]) -> Iterator[Callable[..., BlueskySource]]:
    made: list[BlueskySource] = []

    def build(**overrides: Any) -> BlueskySource:
        raw = {
            "name": "bsky",
            "handle": HANDLE,
            "app_password": APP_PASSWORD,
            "service": bsky.url,
            "query": QUERY,
        }
        made.append(BlueskySource(BlueskyConfig.model_validate({**raw, **overrides}), brands))
        return made[-1]

    yield build
    for source in made:
        source.close()


@pytest.fixture
def sdk_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[timedelta], None]:
    """Move the SDK's clock (it decides when to refresh the session) forward."""

    def advance(by: timedelta) -> None:
        monkeypatch.setattr(TimeMethodsMixin, "get_current_time", lambda self: datetime.now(UTC) + by)

    return advance


def uris(batches: list[Batch]) -> list[list[str]]:
    return [[m.external_id for m in b.mentions] for b in batches]


def no_secret_in(text: str, bsky: FakeBluesky) -> bool:
    return APP_PASSWORD not in text and not any(token in text for token in bsky.issued)


# --- queries and streams ---------------------------------------------------------------------


def test_one_stream_per_brand_name_and_alias(brands: tuple[Any, ...]) -> None:
    assert default_queries(brands) == ['"Bouygues Telecom"', '"Bouygues Télécom"', "BouyguesTelecom"]
    source = BlueskySource(BlueskyConfig(name="bsky"), brands)
    assert source.streams() == [
        'search:"Bouygues Telecom"',
        'search:"Bouygues Télécom"',
        "search:BouyguesTelecom",
    ]
    one = BlueskySource(BlueskyConfig(name="bsky", query="bouygues lang:fr"), brands)
    assert one.streams() == ["search:bouygues lang:fr"]
    several = BlueskySource(BlueskyConfig.model_validate({"name": "bsky", "query": ["a b", "c"]}), brands)
    assert several.streams() == ["search:a b", "search:c"]


# --- one page -> Mentions --------------------------------------------------------------------


def test_a_search_page_becomes_mentions(bsky: FakeBluesky, make_source: Callable[..., BlueskySource]) -> None:
    bsky.serve(fixture_posts())

    batches = list(make_source().fetch(STREAM, {}))

    assert len(batches) == 1
    batch = batches[0]
    assert batch.stream == STREAM and batch.reads == 5 and batch.warning is None
    assert batch.cursor == WINDOW
    by_uri = {m.external_id: m for m in batch.mentions}
    assert list(by_uri) == URIS
    claire = by_uri[URIS[0]]
    assert claire.source == "bsky"
    assert claire.url == "https://bsky.app/profile/claire-dvl.bsky.social/post/3lbq7vxk2ms2c"
    assert claire.text.startswith("Troisième coupure de la fibre cette semaine avec Bouygues Telecom")
    assert (claire.author_id, claire.author_handle, claire.author_name) == (
        "bluesky:did:plc:u7kzq2m4xw3bnc5yrde6hflp",
        "claire-dvl.bsky.social",
        "Claire Duval",
    )
    assert claire.author_followers == 482
    assert claire.lang == "fr"
    assert claire.published_at == datetime(2026, 11, 20, 9, 58, 10, 412000, tzinfo=UTC)
    assert claire.conversation_id == "did:plc:u7kzq2m4xw3bnc5yrde6hflp/3lbq7vxk2ms2c"  # her own thread
    reply = by_uri[URIS[1]]
    assert reply.conversation_id == claire.conversation_id  # the thread's root
    assert reply.author_followers == 57
    sam = by_uri[URIS[2]]
    assert (sam.lang, sam.author_followers, sam.author_handle) == ("en", 12840, "sam.example.com")
    # A handle that no longer resolves: the permalink uses the DID; no langs, no profile.
    orphan = by_uri[URIS[3]]
    assert orphan.url == "https://bsky.app/profile/did:plc:wq4m2bx6yrz7ntl5kcd3vhea/post/3lbq3a2h5vk2x"
    assert (orphan.lang, orphan.author_name, orphan.author_followers) == (None, None, None)
    assert by_uri[URIS[4]].author_followers == 20931

    assert bsky.nsids() == ["createSession", "searchPosts", "getProfiles"]
    login, search, profiles = bsky.calls
    assert login.body == {"identifier": HANDLE, "password": APP_PASSWORD}
    assert {k: v[-1] for k, v in search.params.items()} == {"q": QUERY, "sort": "latest", "limit": "100"}
    assert search.auth == f"Bearer {bsky.issued[0]}"
    assert profiles.params["actors"] == [uri.split("/")[2] for uri in URIS]


def test_a_record_without_created_at_is_dated_by_its_indexing(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    posts = fixture_posts()[:1]
    del posts[0]["record"]["createdAt"]  # off-lexicon: the SDK hands it over as a plain dict
    bsky.serve(posts)

    (batch,) = list(make_source(lang="fr").fetch(STREAM, {}))

    (mention,) = batch.mentions
    assert mention.published_at == datetime(2026, 11, 20, 9, 58, 11, 187000, tzinfo=UTC)
    assert mention.text.startswith("Troisième coupure") and mention.lang == "fr"
    assert bsky.searches()[0].param("lang") == "fr"


# --- pagination and the cursor ---------------------------------------------------------------


def test_pages_are_followed_with_a_resumable_cursor(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.serve(fixture_posts())
    bsky.page_size = 2

    batches = list(make_source().fetch(STREAM, {}))

    assert uris(batches) == [URIS[:2], URIS[2:4], URIS[4:]]
    assert [b.cursor for b in batches] == [
        {"page": "2", "next": WINDOW},
        {"page": "4", "next": WINDOW},
        WINDOW,
    ]
    assert [c.param("cursor") for c in bsky.searches()] == [None, "2", "4"]
    assert bsky.nsids().count("getProfiles") == 3  # each page's new authors, once


def test_the_next_poll_reads_only_what_is_new(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    late = new_post("3lbq7t2abcd2k", "2026-11-20T09:57:00.000Z")  # indexed before Claire, searchable after
    same_time = new_post("3lbq7vxk2ms2d", "2026-11-20T09:58:11.187Z", author=2)  # Claire's exact indexedAt
    newest = new_post("3lbqa2fgh7k2p", "2026-11-20T10:05:00.000Z", created="2026-11-20T10:04:59.100Z")
    bsky.serve([*fixture_posts(), late, same_time, newest])
    source = make_source()

    batches = list(source.fetch(STREAM, WINDOW))

    assert uris(batches) == [[newest["uri"], same_time["uri"], late["uri"]]]
    assert bsky.searches()[0].param("since") == FLOOR
    assert batches[0].cursor == {
        "since": "2026-11-20T10:00:00.000Z",
        "seen": {newest["uri"]: "2026-11-20T10:05:00.000Z"},
    }

    # Nothing new since: nothing yielded, the cursor stays.
    again = list(source.fetch(STREAM, batches[0].cursor))
    assert uris(again) == [[]] and again[0].cursor == batches[0].cursor
    assert bsky.searches()[-1].param("since") == "2026-11-20T09:55:00.000Z"


def test_pagination_stops_at_the_saved_position_even_if_search_ignores_since(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    newest = new_post("3lbqa2fgh7k2p", "2026-11-20T10:05:00.000Z")
    bsky.serve([*fixture_posts(), newest])
    bsky.honour_since, bsky.page_size = False, 2

    batches = list(make_source().fetch(STREAM, WINDOW))

    # Page 2 (Tom, Sam) is below the saved position: the walk stops there, nothing old is yielded.
    assert uris(batches) == [[newest["uri"]], []]
    assert [c.param("cursor") for c in bsky.searches()] == [None, "2"]
    assert batches[-1].cursor == {
        "since": "2026-11-20T10:00:00.000Z",
        "seen": {newest["uri"]: "2026-11-20T10:05:00.000Z"},
    }


def test_max_pages_stops_a_poll_and_the_next_resumes_at_that_page(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    older = fixture_posts()[2:]  # Sam, the orphan, the brand
    bsky.serve(older)
    source = make_source(max_pages=1)
    (first,) = list(source.fetch(STREAM, {}))
    saved = first.cursor
    assert saved == {"since": "2026-11-20T09:07:45.002Z", "seen": {URIS[2]: "2026-11-20T09:12:45.002Z"}}

    bsky.serve(fixture_posts())  # Claire and Tom arrive
    bsky.page_size = 2
    (second,) = list(source.fetch(STREAM, saved))
    assert uris([second]) == [URIS[:2]]
    assert second.cursor == {**saved, "page": "2", "next": WINDOW}

    (third,) = list(source.fetch(STREAM, second.cursor))
    assert uris([third]) == [[]]  # Sam was stored by the first poll
    assert third.cursor == WINDOW
    assert [c.param("cursor") for c in bsky.searches()] == [None, None, "2"]


def test_the_first_poll_reads_the_newest_pages_not_the_whole_history(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.serve(fixture_posts())
    bsky.page_size = 2

    batches = list(make_source(max_pages=2).fetch(STREAM, {}))

    assert uris(batches) == [URIS[:2], URIS[2:4]]
    assert batches[-1].cursor == WINDOW  # settled: no page cursor into older history
    assert len(bsky.searches()) == 2


def test_a_refused_saved_page_cursor_restarts_from_the_newest_page(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.serve(fixture_posts())

    batches = list(make_source().fetch(STREAM, {**WINDOW, "page": "eyJvZmZzZXQiOjEwMH0", "next": WINDOW}))

    assert [c.param("cursor") for c in bsky.searches()] == ["eyJvZmZzZXQiOjEwMH0", None]
    assert uris(batches) == [[]] and batches[0].cursor == WINDOW


def test_a_monthly_read_cap_limits_the_page(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.serve(fixture_posts())

    batches = list(make_source().fetch(STREAM, {}, limit=3))

    assert [b.reads for b in batches] == [3]
    assert bsky.searches()[0].param("limit") == "3"
    assert batches[0].cursor == {"page": "3", "next": WINDOW}


# --- follower counts -------------------------------------------------------------------------


def test_followers_are_looked_up_25_authors_at_a_time(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    template = fixture("get_profiles.json")["profiles"][0]
    posts, bsky.profiles = [], {}
    for i in range(30):
        post = new_post(f"3lbqa{i:02d}xyzk2", f"2026-11-20T10:{i:02d}:00.000Z")
        did = f"did:plc:author{i:02d}zzzzzzzzzzzzzzzzz"
        post["author"]["did"], post["author"]["handle"] = did, f"user{i}.bsky.social"
        post["uri"] = f"at://{did}/app.bsky.feed.post/3lbqa{i:02d}xyzk2"
        bsky.profiles[did] = {
            **template,
            "did": did,
            "handle": f"user{i}.bsky.social",
            "followersCount": 1000 + i,
        }
        posts.append(post)
    bsky.serve(posts)

    (batch,) = list(make_source().fetch(STREAM, {}))

    assert [len(c.params["actors"]) for c in bsky.calls if c.nsid.endswith("getProfiles")] == [25, 5]
    assert sorted(m.author_followers or 0 for m in batch.mentions) == list(range(1000, 1030))
    assert batch.warning is None


def test_a_failed_profile_lookup_keeps_the_posts_without_followers(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.serve(fixture_posts())
    bsky.fail("app.bsky.actor.getProfiles", 500, error("internal"))

    (batch,) = list(make_source().fetch(STREAM, {}))

    assert [m.external_id for m in batch.mentions] == URIS
    assert all(m.author_followers is None for m in batch.mentions)
    assert batch.warning is not None
    assert batch.warning.startswith("follower counts unavailable for 5 author(s), posts kept without them")
    assert "server error (500)" in batch.warning
    assert batch.cursor == WINDOW


# --- faults ----------------------------------------------------------------------------------

RESET = 1795171200  # 2026-11-20T10:40:00Z, as Bluesky's ratelimit-reset (epoch seconds)
RATE_HEADERS = {
    "ratelimit-limit": "3000",
    "ratelimit-remaining": "0",
    "ratelimit-reset": str(RESET),
    "ratelimit-policy": "3000;w=300",
}


@pytest.mark.parametrize(
    ("nsid", "status", "body", "content_type", "kind", "expected"),
    [
        (
            "app.bsky.feed.searchPosts",
            429,
            error("rate_limited"),
            "application/json",
            RetriableSourceError,
            "source bsky: Bluesky rate limit reached (429); resets at 2026-11-20T10:40:00+00:00",
        ),
        (
            "com.atproto.server.createSession",
            429,
            error("rate_limited"),
            "application/json",
            RetriableSourceError,
            "source bsky: Bluesky login rate limit reached (429); resets at 2026-11-20T10:40:00+00:00",
        ),
        (
            "app.bsky.feed.searchPosts",
            500,
            error("internal"),
            "application/json",
            RetriableSourceError,
            "source bsky: Bluesky server error (500); will retry",
        ),
        (
            "app.bsky.feed.searchPosts",
            502,
            error("upstream"),
            "application/json",
            RetriableSourceError,
            "source bsky: Bluesky server error (502); will retry",
        ),
        (
            "app.bsky.feed.searchPosts",
            200,
            '{"posts": [{"uri": "at://',
            "application/json",
            RetriableSourceError,
            "source bsky: Bluesky returned a malformed response; will retry",
        ),
        (
            "app.bsky.feed.searchPosts",
            200,
            {"cursor": "25"},
            "application/json",
            RetriableSourceError,
            "source bsky: Bluesky returned a malformed response; will retry",
        ),
        (
            "app.bsky.feed.searchPosts",
            200,
            "<html><body>Bad gateway</body></html>",
            "text/html",
            RetriableSourceError,
            "source bsky: Bluesky returned a malformed response; will retry",
        ),
        (
            "app.bsky.feed.searchPosts",
            400,
            error("bad_query"),
            "application/json",
            FatalSourceError,
            "source bsky: Bluesky rejected the search query '\"Bouygues Telecom\"': "
            "BadQueryString: could not parse query: unbalanced quotes",
        ),
        (
            "app.bsky.feed.searchPosts",
            404,
            {"error": "MethodNotImplemented", "message": "Method Not Implemented"},
            "application/json",
            FatalSourceError,
            "does not serve the Bluesky search (404): MethodNotImplemented: Method Not Implemented; check `service`",
        ),
    ],
    ids=[
        "429-search",
        "429-login",
        "500",
        "502",
        "truncated-json",
        "missing-posts",
        "html",
        "400-query",
        "404",
    ],
)
def test_api_failures_map_to_source_errors_without_secrets(
    bsky: FakeBluesky,
    make_source: Callable[..., BlueskySource],
    nsid: str,
    status: int,
    body: Any,
    content_type: str,
    kind: type[SourceError],
    expected: str,
) -> None:
    bsky.serve(fixture_posts())
    bsky.fail(nsid, status, body, headers=RATE_HEADERS if status == 429 else None, content_type=content_type)

    with pytest.raises(kind) as caught:
        list(make_source().fetch(STREAM, WINDOW))

    assert type(caught.value) is kind
    assert expected in str(caught.value)
    if status == 429:
        assert caught.value.retry_at == datetime(2026, 11, 20, 10, 40, tzinfo=UTC)
    assert no_secret_in(str(caught.value), bsky) and no_secret_in(repr(caught.value.args), bsky)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_429_without_reset_header_uses_retry_after_or_says_later(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.fail("app.bsky.feed.searchPosts", 429, error("rate_limited"), headers={"retry-after": "120"})
    bsky.fail("app.bsky.feed.searchPosts", 429, error("rate_limited"))
    source = make_source()

    with pytest.raises(RetriableSourceError) as caught:
        list(source.fetch(STREAM, {}))
    assert caught.value.retry_at is not None
    assert timedelta(seconds=100) < caught.value.retry_at - datetime.now(UTC) <= timedelta(seconds=120)

    with pytest.raises(RetriableSourceError, match="resets at later") as caught:
        list(source.fetch(STREAM, {}))
    assert caught.value.retry_at is None


def test_a_wrong_app_password_is_refused_once_and_says_what_to_check(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    wrong = "zzzz-zzzz-zzzz-zzzz"
    source = make_source(query=[QUERY, "BouyguesTelecom"], app_password=wrong)

    for stream in source.streams():
        with pytest.raises(AccessRefusedError) as caught:
            list(source.fetch(stream, {}))
        assert str(caught.value) == (
            "source bsky: Bluesky refused the login (401): AuthenticationRequired: Invalid identifier or "
            "password; check BSKY_HANDLE / BSKY_APP_PASSWORD (or the source's handle / app_password)"
        )
    # Not tried again for the second stream: createSession is rate limited per account.
    assert bsky.nsids() == ["createSession"]


def test_a_timeout_and_an_unreachable_service_are_retriable(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.fail("app.bsky.feed.searchPosts", 200, {"posts": []}, delay=1.0)
    with pytest.raises(
        RetriableSourceError, match=r"^source bsky: Bluesky timed out after 0.3s; will retry$"
    ):
        list(make_source(timeout="300ms").fetch(STREAM, {}))

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(
        RetriableSourceError, match=re.escape(f"network error calling Bluesky at {closed}: ")
    ) as caught:
        list(make_source(service=closed).fetch(STREAM, {}))
    assert "ConnectError" in str(caught.value)


# --- sessions --------------------------------------------------------------------------------


def test_a_session_near_expiry_is_refreshed_without_a_new_login(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource], sdk_clock: Callable[[timedelta], None]
) -> None:
    bsky.serve(fixture_posts())
    source = make_source()
    list(source.fetch(STREAM, {}))

    bsky.offset = timedelta(hours=2)  # two hours later, on both clocks
    sdk_clock(timedelta(hours=2))
    batches = list(source.fetch(STREAM, WINDOW))

    assert uris(batches) == [[]]
    assert bsky.nsids() == ["createSession", "searchPosts", "getProfiles", "refreshSession", "searchPosts"]
    refreshed = bsky.issued[2]  # the access token refreshSession gave
    assert bsky.searches()[-1].auth == f"Bearer {refreshed}"


def test_a_refused_refresh_logs_in_again(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource], sdk_clock: Callable[[timedelta], None]
) -> None:
    bsky.serve(fixture_posts())
    source = make_source()
    list(source.fetch(STREAM, {}))

    bsky.offset = timedelta(hours=2)
    sdk_clock(timedelta(hours=2))
    bsky.refresh_refused = True  # the refresh token was revoked
    bsky.serve([new_post("3lbqa2fgh7k2p", "2026-11-20T10:05:00.000Z"), *fixture_posts()])
    batches = list(source.fetch(STREAM, WINDOW))

    assert uris(batches) == [["at://did:plc:u7kzq2m4xw3bnc5yrde6hflp/app.bsky.feed.post/3lbqa2fgh7k2p"]]
    assert bsky.nsids()[3:] == ["refreshSession", "createSession", "searchPosts", "getProfiles"]


def test_a_session_the_server_calls_expired_logs_in_again(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    bsky.serve(fixture_posts())
    source = make_source()
    list(source.fetch(STREAM, {}))

    bsky.expire_sessions()
    batches = list(source.fetch(STREAM, WINDOW))

    assert uris(batches) == [[]]
    assert bsky.nsids()[3:] == ["searchPosts", "createSession", "searchPosts"]
    assert bsky.searches()[-1].auth == f"Bearer {bsky.issued[-2]}"


def test_an_expired_session_whose_new_login_is_refused_parks_on_credentials(
    bsky: FakeBluesky, make_source: Callable[..., BlueskySource]
) -> None:
    source = make_source()
    list(source.fetch(STREAM, {}))

    bsky.expire_sessions()
    bsky.password = "a-new-app-password"  # the app password was revoked
    with pytest.raises(AccessRefusedError, match="BSKY_HANDLE / BSKY_APP_PASSWORD"):
        list(source.fetch(STREAM, {}))


# --- through the collector (SQLite and PostgreSQL) --------------------------------------------


def bluesky_settings(make_settings: Callable[..., Settings], bsky: FakeBluesky, **source: Any) -> Settings:
    brand = {**BRAND, "handles": [*BRAND["handles"], "@bouyguestelecom.bsky.social"]}
    entry = {
        "type": "bluesky",
        "name": "bsky",
        "handle": HANDLE,
        "app_password": APP_PASSWORD,
        "service": bsky.url,
    }
    return make_settings(brands=[brand], sources=[{**entry, **source}])


def stored(db: Database) -> list[MentionRow]:
    with db.session() as session:
        rows = list(session.scalars(select(MentionRow).order_by(MentionRow.id)))
        session.expunge_all()
    return rows


def stream_state(db: Database, stream: str = STREAM) -> SourceStateRow:
    with db.session() as session:
        row = session.scalar(
            select(SourceStateRow).where(SourceStateRow.source == "bsky", SourceStateRow.stream == stream)
        )
        assert row is not None
        session.expunge(row)
    return row


def seed_cursor(db: Database, cursor: dict[str, Any], stream: str = STREAM) -> None:
    with db.session() as session:
        state.record_success(session, "bsky", stream, cursor, datetime(2026, 11, 20, 9, 0, tzinfo=UTC), 0)


def test_every_default_stream_is_polled_and_each_post_stored_once(
    db: Database, make_settings: Callable[..., Settings], bsky: FakeBluesky, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bsky.serve(fixture_posts())
    bsky.serve(fixture_posts()[:2], query='"Bouygues Télécom"')  # the same posts found by the alias
    collector = Collector(bluesky_settings(make_settings, bsky), db)
    try:
        report = collector.collect()

        assert report.errors == [] and report.skipped == {}
        assert [s.stream for s in report.streams] == [
            STREAM,
            'search:"Bouygues Télécom"',
            "search:BouyguesTelecom",
        ]
        assert [(s.received, s.stored) for s in report.streams] == [(5, 5), (2, 0), (0, 0)]
        rows = stored(db)
        assert [r.external_id for r in rows] == URIS
        assert {r.brand for r in rows} == {"Bouygues Telecom"}
        assert [r.author_is_brand for r in rows] == [False, False, False, False, True]
        assert rows[0].author_followers == 482 and rows[0].lang == "fr"
        assert (
            rows[1].conversation_id
            == rows[0].conversation_id
            == "did:plc:u7kzq2m4xw3bnc5yrde6hflp/3lbq7vxk2ms2c"
        )
        assert stream_state(db).cursor == WINDOW
        assert stream_state(db).mentions_total == 5
        assert stream_state(db, "search:BouyguesTelecom").cursor == {}

        # The next poll asks only from the saved position and stores nothing twice.
        report = collector.collect()
        assert report.errors == [] and [s.received for s in report.streams] == [0, 0, 0]
        assert [c.param("since") for c in bsky.searches()][3:] == [FLOOR, FLOOR, None]
        assert len(stored(db)) == 5
    finally:
        collector.close()
    assert bsky.nsids().count("createSession") == 1  # one session for every stream and poll
    assert no_secret_in(caplog.text, bsky)


def test_a_failure_mid_pagination_resumes_with_no_gap_and_no_duplicate(
    db: Database, make_settings: Callable[..., Settings], bsky: FakeBluesky
) -> None:
    # Stored up to the brand's post; since then Claire, Tom, Sam, the orphan and three newer posts.
    seed_cursor(db, {"since": "2026-11-20T08:25:01.330Z", "seen": {URIS[4]: "2026-11-20T08:30:01.330Z"}})
    newer = [new_post(f"3lbqb{i}aaaak2x", f"2026-11-20T10:0{i}:00.000Z") for i in range(3)]
    newest_three = [p["uri"] for p in reversed(newer)]
    bsky.serve([*fixture_posts(), *newer])
    bsky.page_size = 3
    bsky.fail("app.bsky.feed.searchPosts", 503, error("internal"), when_cursor="3")
    collector = Collector(bluesky_settings(make_settings, bsky, query=QUERY), db)
    try:
        report = collector.collect()

        assert [e.error for e in report.errors] == ["source bsky: Bluesky server error (503); will retry"]
        assert [r.external_id for r in stored(db)] == newest_three
        row = stream_state(db)
        assert row.consecutive_errors == 1
        in_progress = {"since": "2026-11-20T09:57:00.000Z", "seen": {p["uri"]: p["indexedAt"] for p in newer}}
        assert row.cursor == {
            "since": "2026-11-20T08:25:01.330Z",
            "seen": {URIS[4]: "2026-11-20T08:30:01.330Z"},
            "page": "3",
            "next": in_progress,
        }

        report = collector.collect()

        assert report.errors == []
        assert [c.param("cursor") for c in bsky.searches()] == [None, "3", "3", "6"]
        assert {c.param("since") for c in bsky.searches()} == {"2026-11-20T08:20:01.330Z"}
        ids = [r.external_id for r in stored(db)]
        assert ids == newest_three + URIS[:4]  # the brand's post was stored before: not again
        row = stream_state(db)
        # Claire (indexed 09:58:11) is inside the new window too: her post will not come back.
        assert row.cursor == {
            **in_progress,
            "seen": {**in_progress["seen"], URIS[0]: "2026-11-20T09:58:11.187Z"},
        }
        assert row.consecutive_errors == 0 and row.last_error is None
    finally:
        collector.close()


@pytest.mark.parametrize("reason", ["429", "401"])
def test_a_refusal_parks_the_stream_keeps_the_cursor_and_stores_no_secret(
    db: Database, make_settings: Callable[..., Settings], bsky: FakeBluesky, reason: str
) -> None:
    bsky.serve(fixture_posts())
    seed_cursor(db, WINDOW)
    if reason == "429":
        bsky.fail("app.bsky.feed.searchPosts", 429, error("rate_limited"), headers=RATE_HEADERS)
        settings = bluesky_settings(make_settings, bsky, query=QUERY)
    else:
        settings = bluesky_settings(make_settings, bsky, query=QUERY, app_password="zzzz-zzzz-zzzz-zzzz")
    clock_now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    collector = Collector(settings, db, clock=lambda: clock_now)
    try:
        first = collector.collect()
        calls = len(bsky.calls)
        second = collector.collect()
    finally:
        collector.close()

    row = stream_state(db)
    assert row.cursor == WINDOW and stored(db) == []
    assert len(first.errors) == 1 and row.consecutive_errors == 1
    if reason == "429":
        assert row.parked_until == datetime(2026, 11, 20, 10, 40, tzinfo=UTC)
        assert "rate limit reached (429)" in (row.last_error or "")
    else:
        assert row.parked_until is None and row.config_fingerprint is not None
        assert "BSKY_APP_PASSWORD" in (row.last_error or "")
    # Parked: the next cycle does not call Bluesky at all.
    assert second.streams[0].parked is not None and len(bsky.calls) == calls
    columns = {c.key: getattr(row, c.key) for c in SourceStateRow.__table__.columns}
    assert no_secret_in(json.dumps(columns, default=str), bsky)


def test_a_profile_failure_is_stored_as_the_streams_warning(
    db: Database, make_settings: Callable[..., Settings], bsky: FakeBluesky
) -> None:
    bsky.serve(fixture_posts())
    bsky.fail("app.bsky.actor.getProfiles", 429, error("rate_limited"), headers=RATE_HEADERS)
    collector = Collector(bluesky_settings(make_settings, bsky, query=QUERY), db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert report.errors == []
    rows = stored(db)
    assert [r.external_id for r in rows] == URIS and all(r.author_followers is None for r in rows)
    row = stream_state(db)
    assert row.cursor == WINDOW
    assert (row.last_warning or "").startswith("follower counts unavailable for 5 author(s)")


# --- configuration ---------------------------------------------------------------------------


def test_a_source_without_login_is_skipped_naming_the_variables(
    db: Database, make_settings: Callable[..., Settings], bsky: FakeBluesky
) -> None:
    settings = make_settings(sources=[{"type": "bluesky", "name": "bsky", "service": bsky.url}])
    collector = Collector(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert report.skipped["bsky"] == (
        "no Bluesky login: set BSKY_HANDLE and BSKY_APP_PASSWORD (or the source's handle / app_password) to enable it"
    )
    assert report.streams == [] and bsky.calls == []
    assert collector.due_sources() == []


def test_optional_env_credentials_load_unset_and_enable_when_set() -> None:
    raw = {
        "database": "sqlite://",
        "brands": [BRAND],
        "sources": [
            {
                "type": "bluesky",
                "name": "bsky",
                "handle": "${BSKY_HANDLE:-}",
                "app_password": "${BSKY_APP_PASSWORD:-}",
            }
        ],
    }

    unset = settings_from_dict(raw, env={"BSKY_HANDLE": HANDLE})
    reason = BlueskySource(unset.sources[0], unset.brands).disabled_reason()
    assert reason is not None and "BSKY_APP_PASSWORD" in reason and "BSKY_HANDLE " not in reason

    configured = settings_from_dict(raw, env={"BSKY_HANDLE": HANDLE, "BSKY_APP_PASSWORD": APP_PASSWORD})
    source = BlueskySource(configured.sources[0], configured.brands)
    assert source.disabled_reason() is None
    assert source.config.service == "https://bsky.social"
    assert APP_PASSWORD not in repr(configured) and APP_PASSWORD not in str(configured.sources[0])


def test_a_source_with_nothing_to_search_says_so() -> None:
    source = BlueskySource(BlueskyConfig(name="bsky", handle=HANDLE, app_password=APP_PASSWORD), ())
    assert source.disabled_reason() == "nothing to search: the source has no brands and no query"


def test_ids_and_names_fit_the_mentions_table() -> None:
    from atproto_client import models
    from atproto_client.models.utils import get_or_create

    post = fixture_posts()[1]
    long_did = "did:web:" + "very-long-subdomain." * 4 + "example.com"
    post["record"]["reply"]["root"]["uri"] = f"at://{long_did}/app.bsky.feed.post/3lbq7vxk2ms2c"
    post["author"]["handle"] = "a" * 90 + ".bsky.social"  # valid (up to 253), longer than the column
    post["author"]["displayName"] = "é" * 320
    view = get_or_create(post, models.AppBskyFeedDefs.PostView)

    mention = post_to_mention("bsky", view, {})

    assert mention is not None
    assert mention.conversation_id is not None and len(mention.conversation_id) == 64
    assert mention.conversation_id == conversation_key(f"at://{long_did}/app.bsky.feed.post/3lbq7vxk2ms2c")
    assert mention.author_handle is None and mention.author_name == "é" * 300
    assert mention.url == f"https://bsky.app/profile/{post['author']['handle']}/post/3lbq6zt4fy22o"
