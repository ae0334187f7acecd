"""Bluesky: `app.bsky.feed.searchPosts` (sort `latest`) through the atproto SDK, one stream per query.

Search needs a logged-in account (an app password). The session is created once per source and
kept: the SDK refreshes the access token before it expires; when the refresh is refused or the
server calls the token expired, the source logs in again once instead of failing for good.

Cursor. Pages come newest first with an opaque page `cursor`. The saved position is a window: `since`
(everything indexed before it is stored) and `seen` (the URIs indexed at or after `since` that are
stored, with their `indexedAt`). `since` trails the newest `indexedAt` by `SLACK`, so a post that
shows up in search a little late, or whose `createdAt` (search sorts and filters by
min(createdAt, indexedAt)) is a little before its indexing, is still picked up once, and nothing is
yielded twice. While a poll paginates, the cursor keeps that old window, the page `cursor` to
resume from and the window being built (`next`); only after the last page does `next` become the
window. A failure mid-way resumes at the page that failed: no gap, no duplicate.

The SDK is imported lazily: it takes about a second to import, and most commands never poll.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr

from monitor.confbase import Duration, HttpUrl
from monitor.errors import AccessRefusedError, FatalSourceError, RetriableSourceError, SourceError
from monitor.mention import Mention
from monitor.sources.base import Batch, Source, SourceConfig

if TYPE_CHECKING:
    from atproto_client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_SIZE = 100  # searchPosts' maximum `limit`
PROFILES_PER_CALL = 25  # getProfiles' maximum `actors`
SLACK = timedelta(minutes=5)  # how late a post may appear in search and still be caught
MAX_SEEN = 500  # URIs kept in the cursor's window (a very busy query narrows the window instead)
STREAM_PREFIX = "search:"
MAX_NAME, MAX_HANDLE = 300, 100  # the mentions table's author_name / author_handle sizes
LOGIN_HINT = "check BSKY_HANDLE / BSKY_APP_PASSWORD (or the source's handle / app_password)"
_TOKEN_ERRORS = frozenset({"ExpiredToken", "InvalidToken"})

Query = Annotated[str, Field(min_length=1, max_length=512)]


class BlueskyConfig(SourceConfig):
    type: Literal["bluesky"] = "bluesky"
    every: Duration = timedelta(minutes=10)
    handle: str | None = None
    app_password: SecretStr | None = None
    service: HttpUrl = "https://bsky.social"
    query: Query | tuple[Query, ...] | None = None
    lang: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    max_pages: int = Field(default=5, ge=1, le=100)
    timeout: Duration = timedelta(seconds=30)


def default_queries(brands: Sequence[Any]) -> list[str]:
    """One search per brand name and alias (multi-word ones as phrases), case-insensitively unique.

    X handles in `handles` are not Bluesky handles, so they are not searched.
    """
    queries: dict[str, str] = {}
    for brand in brands:
        for term in (brand.name, *brand.aliases):
            term = term.strip().replace('"', "")
            if term:
                queries.setdefault(term.casefold(), f'"{term}"' if " " in term else term)
    return list(queries.values())


def parse_time(value: Any) -> datetime | None:
    """An atproto datetime as aware UTC; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def post_url(uri: str, handle: str | None, did: str | None) -> str | None:
    """The bsky.app permalink of a post `at://<did>/app.bsky.feed.post/<rkey>`."""
    parts = uri.removeprefix("at://").split("/")
    if len(parts) != 3 or parts[1] != "app.bsky.feed.post":
        return None
    actor = handle if handle and handle != "handle.invalid" else did or parts[0]
    return f"https://bsky.app/profile/{actor}/post/{parts[2]}"


def conversation_key(uri: str) -> str:
    """A thread's id from its root post's URI, short enough for the `conversation_id` column (64).

    `at://did:plc:.../app.bsky.feed.post/<rkey>` becomes `did:plc:.../<rkey>`; a longer one
    (a long did:web) becomes its SHA-256.
    """
    parts = uri.removeprefix("at://").split("/")
    key = f"{parts[0]}/{parts[-1]}" if len(parts) == 3 else uri
    return key if len(key) <= 64 else hashlib.sha256(uri.encode()).hexdigest()


def post_to_mention(source: str, post: Any, followers: dict[str, int | None]) -> Mention | None:
    """A searchPosts PostView (SDK model) as a Mention.

    `conversation_id` is the thread's root (the post itself when it is not a reply), as for X, so
    replies in a thread join the case its first post opened.
    """
    uri = getattr(post, "uri", None)
    if not isinstance(uri, str) or not uri:
        return None
    author = getattr(post, "author", None)
    did = getattr(author, "did", None)
    handle = getattr(author, "handle", None)
    record = getattr(post, "record", None)
    text = getattr(record, "text", None)
    langs = getattr(record, "langs", None)
    reply = getattr(record, "reply", None)
    root = getattr(getattr(reply, "root", None), "uri", None) if reply is not None else None
    name = getattr(author, "display_name", None)
    return Mention(
        source=source,
        external_id=uri,
        text=text if isinstance(text, str) else "",
        url=post_url(uri, handle, did),
        author_id=f"bluesky:{did}" if did else None,
        author_name=name[:MAX_NAME] if isinstance(name, str) and name else None,
        author_handle=handle if isinstance(handle, str) and len(handle) <= MAX_HANDLE else None,
        author_followers=followers.get(did) if did else None,
        lang=langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None,
        published_at=parse_time(getattr(record, "created_at", None))
        or parse_time(getattr(post, "indexed_at", None)),
        conversation_id=conversation_key(root if isinstance(root, str) and root else uri),
    )


def sort_time(post: Any) -> datetime | None:
    """When search places the post: min(createdAt, indexedAt), its `sortAt`."""
    times = [
        t
        for t in (parse_time(getattr(getattr(post, "record", None), "created_at", None)), indexed_at(post))
        if t
    ]
    return min(times) if times else None


def indexed_at(post: Any) -> datetime | None:
    return parse_time(getattr(post, "indexed_at", None))


@dataclass(slots=True)
class Window:
    """A stream's position: everything indexed before `since` is done, and so are the `seen` URIs."""

    since: datetime | None = None
    seen: dict[str, str] = field(default_factory=dict)  # uri -> indexedAt

    @classmethod
    def load(cls, raw: Any) -> Window:
        if not isinstance(raw, dict):
            return cls()
        seen = raw.get("seen")
        return cls(
            since=parse_time(raw.get("since")),
            seen={u: t for u, t in seen.items() if isinstance(u, str) and isinstance(t, str)}
            if isinstance(seen, dict)
            else {},
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.since is not None:
            out["since"] = format_time(self.since)
        if self.seen:
            out["seen"] = dict(self.seen)
        return out

    def is_new(self, uri: str, indexed: datetime | None) -> bool:
        if uri in self.seen:
            return False
        return self.since is None or indexed is None or indexed >= self.since

    def advance(self, posts: dict[str, datetime]) -> Window:
        """The window once `posts` (uri -> indexedAt) are stored too: `SLACK` behind the newest."""
        merged = {u: parsed for u, t in self.seen.items() if (parsed := parse_time(t))}
        merged.update(posts)
        if not merged:
            return self
        since = max(merged.values()) - SLACK
        if self.since is not None and self.since > since:
            since = self.since
        kept = sorted(((t, u) for u, t in merged.items() if t >= since), reverse=True)[:MAX_SEEN]
        if len(kept) == MAX_SEEN:
            since = max(since, kept[-1][0])
        return Window(since, {u: format_time(t) for t, u in kept})


class BlueskySource(Source):
    type = "bluesky"
    Config = BlueskyConfig
    config: BlueskyConfig

    def __init__(self, config: BlueskyConfig, brands: Sequence[Any] = ()) -> None:
        super().__init__(config, brands)
        query = config.query
        self.queries = [query] if isinstance(query, str) else list(query or ()) or default_queries(brands)
        self._client: Client | None = None
        self._refused: AccessRefusedError | None = None  # a refused login is not retried per stream

    def disabled_reason(self) -> str | None:
        if not self.config.enabled:
            return "disabled in config (enabled: false)"
        missing = [
            env
            for env, value in (
                ("BSKY_HANDLE", self.config.handle),
                (
                    "BSKY_APP_PASSWORD",
                    self.config.app_password and self.config.app_password.get_secret_value(),
                ),
            )
            if not (value or "").strip()
        ]
        if missing:
            return (
                f"no Bluesky login: set {' and '.join(missing)} "
                "(or the source's handle / app_password) to enable it"
            )
        if not self.queries:
            return "nothing to search: the source has no brands and no query"
        return None

    def streams(self) -> list[str]:
        return [f"{STREAM_PREFIX}{query}" for query in self.queries]

    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        """Pages newest first, until the old window is reached; the window moves after the last page."""
        query = stream.removeprefix(STREAM_PREFIX)
        old = Window.load(cursor)
        upcoming = Window.load(cursor["next"]) if isinstance(cursor.get("next"), dict) else old
        page: str | None = cursor.get("page") if isinstance(cursor.get("page"), str) else None
        floor = old.since - SLACK if old.since is not None else None  # search's `since` is on sortAt
        remaining = limit
        followers: dict[str, int | None] = {}
        for number in range(1, self.config.max_pages + 1):
            if remaining is not None and remaining < 1:
                return  # the monthly cap: the cursor of the last batch resumes here
            size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            try:
                result = self._search(query, floor, page, size)
            except _StalePage:
                log.info(
                    "source %s [%s]: saved page cursor refused; restarting from the newest", self.name, stream
                )
                page = None
                result = self._search(query, floor, None, size)
            posts = list(getattr(result, "posts", None) or ())
            new_posts = [p for p in posts if self._is_new(p, old, upcoming)]
            warning = self._lookup_followers(new_posts, followers)
            mentions = [m for p in new_posts if (m := post_to_mention(self.name, p, followers))]
            upcoming = upcoming.advance({p.uri: t for p in new_posts if (t := indexed_at(p))})
            next_page = getattr(result, "cursor", None)
            last = not next_page or not posts or next_page == page or _reached(posts, floor)
            # The first poll reads the newest `max_pages` pages, not the whole history.
            last = last or (old.since is None and number == self.config.max_pages)
            if remaining is not None:
                remaining -= len(posts)
            page = None if last else next_page
            next_cursor = upcoming.dump() if last else {**old.dump(), "page": page, "next": upcoming.dump()}
            yield Batch(
                stream=stream, cursor=next_cursor, mentions=mentions, reads=len(posts), warning=warning
            )
            if last:
                return

    @staticmethod
    def _is_new(post: Any, old: Window, upcoming: Window) -> bool:
        """Not in the saved window, and not already on an earlier page of this poll."""
        uri = getattr(post, "uri", None)
        return (
            isinstance(uri, str)
            and bool(uri)
            and old.is_new(uri, indexed_at(post))
            and uri not in upcoming.seen
        )

    # --- API calls ---------------------------------------------------------------------------

    def _search(self, query: str, floor: datetime | None, page: str | None, size: int) -> Any:
        params: dict[str, Any] = {"q": query, "sort": "latest", "limit": size}
        if floor is not None:
            params["since"] = format_time(floor)
        if page:
            params["cursor"] = page
        if self.config.lang:
            params["lang"] = self.config.lang
        return self._call(
            lambda client: client.app.bsky.feed.search_posts(params=params), query=query, page_sent=bool(page)
        )

    def _lookup_followers(self, posts: list[Any], followers: dict[str, int | None]) -> str | None:
        """Fill `followers` for the posts' authors, 25 per call; a failure only costs the counts."""
        dids = list(
            dict.fromkeys(
                did
                for p in posts
                if isinstance(did := getattr(getattr(p, "author", None), "did", None), str)
                and did not in followers
            )
        )
        for start in range(0, len(dids), PROFILES_PER_CALL):
            chunk = dids[start : start + PROFILES_PER_CALL]
            try:
                result = self._profiles(chunk)
            except SourceError as exc:
                missing = len(dids) - start
                return f"follower counts unavailable for {missing} author(s), posts kept without them: {exc}"
            for profile in getattr(result, "profiles", None) or ():
                count = getattr(profile, "followers_count", None)
                followers[profile.did] = count if isinstance(count, int) else None
        return None

    def _profiles(self, actors: list[str]) -> Any:
        return self._call(lambda client: client.app.bsky.actor.get_profiles(params={"actors": actors}))

    def _call(
        self, request: Callable[[Client], T], *, query: str | None = None, page_sent: bool = False
    ) -> T:
        """Run one API call logged in; log in again once if the session expired; translate failures."""
        fresh = self._client is None
        client = self._login()
        try:
            return request(client)
        except _sdk_errors() as exc:
            if fresh or not _session_expired(exc):
                raise self._error(exc, query=query, page_sent=page_sent) from None
        log.info("source %s: Bluesky session expired; logging in again", self.name)
        self._drop_client()
        client = self._login()
        try:
            return request(client)
        except _sdk_errors() as exc:
            raise self._error(exc, query=query, page_sent=page_sent) from None

    def _login(self) -> Client:
        if self._client is not None:
            return self._client
        if self._refused is not None:
            raise AccessRefusedError(str(self._refused))
        from atproto_client import Client
        from atproto_client.request import Request

        password = self.config.app_password.get_secret_value() if self.config.app_password else ""
        client = Client(
            base_url=self.config.service, request=Request(timeout=self.config.timeout.total_seconds())
        )
        try:
            client.login((self.config.handle or "").strip().lstrip("@"), password, fetch_bsky_profile=False)
        except _sdk_errors() as exc:
            client.request.close()
            error = self._error(exc, login=True)
            if isinstance(error, AccessRefusedError):
                self._refused = error
            raise error from None
        self._client = client
        return client

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.request.close()
            self._client = None

    def _error(
        self, exc: BaseException, *, login: bool = False, query: str | None = None, page_sent: bool = False
    ) -> SourceError:
        """The SourceError for an SDK failure: what happened and what to do, without secrets."""
        from atproto_client import exceptions as sdk
        from atproto_client.models.common import XrpcError

        where = f"source {self.name}"
        status = exc.response.status_code if isinstance(exc, sdk.RequestErrorBase) and exc.response else None
        detail = self._scrub(_detail(exc))
        if isinstance(exc, sdk.RateLimitExceededError):
            retry_at = exc.reset_at
            if retry_at is None and exc.retry_after is not None:
                retry_at = datetime.now(UTC) + timedelta(seconds=exc.retry_after)
            until = retry_at.isoformat() if retry_at else "later"
            what = "login rate limit" if login else "rate limit"
            return RetriableSourceError(
                f"{where}: Bluesky {what} reached (429); resets at {until}", retry_at=retry_at
            )
        if login and isinstance(exc, sdk.UnauthorizedError | sdk.BadRequestError):
            return AccessRefusedError(
                f"{where}: Bluesky refused the login ({status}): {detail}; {LOGIN_HINT}"
            )
        if isinstance(exc, sdk.UnauthorizedError):
            return AccessRefusedError(
                f"{where}: Bluesky refused the request ({status}): {detail}; "
                f"check that the account is active and the app password not revoked ({LOGIN_HINT})"
            )
        if isinstance(exc, sdk.BadRequestError):
            error = exc.response.content.error if isinstance(exc.response.content, XrpcError) else None
            if error in _TOKEN_ERRORS:
                return RetriableSourceError(
                    f"{where}: Bluesky session refused after a new login ({detail}); will retry"
                )
            if page_sent:
                return _StalePage(f"{where}: Bluesky refused the saved page cursor: {detail}")
            return FatalSourceError(f"{where}: Bluesky rejected the search query {query!r}: {detail}")
        if isinstance(exc, sdk.InvokeTimeoutError):
            return RetriableSourceError(
                f"{where}: Bluesky timed out after {self.config.timeout.total_seconds():g}s; will retry"
            )
        if isinstance(exc, sdk.NetworkError) and status is None:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection failed"
            return RetriableSourceError(
                f"{where}: network error calling Bluesky at {self.config.service}: {cause}"
            )
        if status is not None and (status >= 500 or isinstance(exc, sdk.NetworkError)):
            return RetriableSourceError(f"{where}: Bluesky server error ({status}); will retry")
        if status in (404, 501):
            return FatalSourceError(
                f"{where}: {self.config.service} does not serve the Bluesky search ({status}): {detail}; check `service`"
            )
        if status is not None:
            return FatalSourceError(f"{where}: Bluesky error ({status}): {detail}")
        if isinstance(exc, sdk.ModelError | ValueError):
            return RetriableSourceError(f"{where}: Bluesky returned a malformed response; will retry")
        return RetriableSourceError(f"{where}: error calling Bluesky: {type(exc).__name__}; will retry")

    def _scrub(self, text: str) -> str:
        """Server messages never echo secrets, but make sure of it."""
        secrets = [self.config.app_password.get_secret_value()] if self.config.app_password else []
        session = getattr(self._client, "_session", None) if self._client is not None else None
        if session is not None:
            secrets += [session.access_jwt, session.refresh_jwt]
        for secret in secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self._drop_client()


class _StalePage(FatalSourceError):
    """Bluesky refused a saved page cursor (400); `fetch` restarts from the newest page."""


@cache
def _sdk_errors() -> tuple[type[BaseException], ...]:
    """What an SDK call can raise: its own errors, httpx errors it passes through, bad JSON."""
    import httpx
    from atproto_core.exceptions import AtProtocolError

    return (AtProtocolError, httpx.HTTPError, ValueError)


def _reached(posts: list[Any], floor: datetime | None) -> bool:
    """Whether the page goes below the search's `since` (for a server that ignores it)."""
    if floor is None:
        return False
    return any(t < floor for p in posts if (t := sort_time(p)) is not None)


def _session_expired(exc: BaseException) -> bool:
    """A refused or expired session (the SDK's refresh included), which a new login fixes."""
    from atproto_client import exceptions as sdk
    from atproto_client.models.common import XrpcError
    from atproto_server.exceptions import InvalidTokenError

    if isinstance(exc, sdk.LoginRequiredError | InvalidTokenError):
        return True
    response = exc.response if isinstance(exc, sdk.RequestErrorBase) else None
    if response is None:
        return False
    if isinstance(exc, sdk.UnauthorizedError) and response.status_code == 401:
        return True
    return isinstance(response.content, XrpcError) and response.content.error in _TOKEN_ERRORS


def _detail(exc: BaseException) -> str:
    from atproto_client import exceptions as sdk
    from atproto_client.models.common import XrpcError

    response = exc.response if isinstance(exc, sdk.RequestErrorBase) else None
    if response is None:
        return type(exc).__name__
    content = response.content
    if isinstance(content, XrpcError):
        text = f"{content.error}: {content.message}" if content.message else str(content.error)
    else:
        text = str(response.status_code)
    return text[:300]
