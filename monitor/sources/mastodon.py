"""Mastodon instances through Mastodon.py: hashtag timelines, and full-text search of posts.

Streams: one per (instance, hashtag), `https://mastodon.social tag:bouygues`, and one per search
term on the instance the access token belongs to, `https://mastodon.social search:Bouygues Telecom`.
Mastodon full-text searches posts only for a logged-in account (an anonymous search answers with
accounts and hashtags, never posts), and a token only works on its own instance: so search runs on
the first listed instance, and only with a token. Mastodon's search has no OR, hence one stream per
brand name and alias.

The cursor is `since_id`, the newest stored status id of that instance. Pages come newest first;
while a poll is paginating, the cursor keeps the old `since_id` plus `max_id` (the oldest id read)
and `newest_id`; `since_id` moves to `newest_id` only when the last page is stored, so a failure
mid-way resumes where it stopped: no gap, no duplicate. Search is never sent `min_id`: Mastodon 4.2+
turns it into an `after:` filter on the publication date, which would miss posts that federated
late. Pages are read until one reaches `since_id`, and statuses at or below it are dropped here
(which also covers servers that ignore paging parameters). The first poll reads the newest
`max_pages` pages and does not backfill older posts.

external_id is the status `uri`: federated copies of a post on several instances share it, so a post
seen from two instances is stored once.

Mastodon.py is imported lazily, on the first API call: most commands never poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

import requests
from pydantic import Field, SecretStr, field_validator

from monitor import USER_AGENT
from monitor.analysis.text import fold, html_to_text
from monitor.confbase import Duration
from monitor.errors import AccessRefusedError, FatalSourceError, RetriableSourceError
from monitor.mention import Mention
from monitor.sources.base import Batch, Source, SourceConfig

if TYPE_CHECKING:
    from mastodon import Mastodon, MastodonError, MastodonNetworkError

    _ClientBase = Mastodon
else:
    _ClientBase = object  # _client_class() adds Mastodon under it, on first use

PAGE_SIZE = 40  # the most Mastodon returns per page, for search and timelines alike
PUBLIC_VISIBILITIES = frozenset({"public", "unlisted"})
# Told to the client so it never asks the server for its version (and search may take max_id).
ASSUMED_VERSION = "4.0.0"
# After a network failure or 5xx, the instance's other streams fail at once for this long (seconds;
# at most half of `every`) instead of each waiting for its own timeout: a dead instance costs one
# timeout per poll, not one per stream.
UNREACHABLE_FOR = 60.0
TOKEN_ENV = "MASTODON_ACCESS_TOKEN"


def _instance_url(value: Any) -> str:
    """`https://host[:port]`, lower-cased, nothing after it: the API base URL of one instance."""
    example = "an https:// instance URL like https://mastodon.social"
    if not isinstance(value, str):
        raise ValueError(f"expected {example}, got {value!r}")
    parts = urlsplit(value.strip())
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError(f"expected {example}, got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"expected {example} with no path, query or login, got {value!r}")
    return f"https://{parts.netloc.lower()}"


class MastodonConfig(SourceConfig):
    type: Literal["mastodon"] = "mastodon"
    every: Duration = timedelta(minutes=5)
    instances: tuple[str, ...] = Field(min_length=1)
    query: str | None = Field(default=None, min_length=1, max_length=500)
    hashtags: tuple[str, ...] = ()
    access_token: SecretStr | None = None
    max_pages: int = Field(default=5, ge=1, le=100)
    timeout: Duration = timedelta(seconds=30)

    @field_validator("instances", mode="before")
    @classmethod
    def _instances(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return tuple(dict.fromkeys(_instance_url(v) for v in value))

    @field_validator("hashtags", mode="before")
    @classmethod
    def _hashtags(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        tags: dict[str, str] = {}
        for raw in value:
            tag = raw.strip().lstrip("#") if isinstance(raw, str) else ""
            if not tag or not all(c.isalnum() or c in "_·" for c in tag):
                raise ValueError(f"expected hashtags like 'bouygues' (letters, digits, _), got {raw!r}")
            tags.setdefault(tag.casefold(), tag)
        return tuple(tags.values())


@dataclass(frozen=True, slots=True)
class _Target:
    """What one stream reads: a search query or a hashtag, on one instance."""

    instance: str
    kind: Literal["search", "tag"]
    value: str

    @property
    def host(self) -> str:
        return urlsplit(self.instance).netloc


class _Client(_ClientBase):
    """Mastodon.py, minus its instance probe on timeline reads.

    `timeline()` first fetches /api/v2/instance (again after every failure) to warn when a timeline
    needs login; we learn that from the timeline's own 401, without the extra request (and its
    timeout on a dead instance).
    """

    last_error: str | None = None

    def record_error(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Keep the server's `error` text: Mastodon.py drops it for endpoints that return lists."""
        self.last_error = None
        if response.ok:
            return
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            self.last_error = body["error"]

    def timeline_is_available(
        self,
        timeline: str = "public",
        local: bool = False,
        remote: bool = False,
        with_auth: bool = False,
        fail_hard: bool = False,
    ) -> bool:
        return True


@cache
def _client_class() -> type[_Client]:
    """`_Client` on Mastodon.py's client, built on first use: only a source that polls imports it."""
    from mastodon import Mastodon

    client = type("_Client", (_Client, Mastodon), {"__doc__": _Client.__doc__})
    return cast("type[_Client]", client)


def default_terms(brands: Sequence[Any]) -> list[str]:
    """The brands' names and aliases, one search each (Mastodon's search has no OR).

    Spellings that differ only by case or accents are searched once (the index folds them).
    Handles are left out: a query with an @ is an account lookup, not a post search.
    """
    terms: dict[str, str] = {}
    for brand in brands:
        for term in (brand.name, *brand.aliases):
            if term.strip():
                terms.setdefault(fold(" ".join(term.split())), " ".join(term.split()))
    return list(terms.values())


def _key(status_id: str) -> tuple[int, str]:
    """Order of ids: Mastodon's are numbers as strings, Pleroma's fixed-length sortable strings."""
    return (len(status_id), status_id)


def _published(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def status_to_mention(source: str, host: str, status: dict[str, Any]) -> Mention | None:
    """A status as a Mention; boosts (their original is the mention) and non-public posts are not."""
    if status.get("reblog") or status.get("visibility") not in PUBLIC_VISIBILITIES:
        return None
    status_id = str(status["id"])
    uri = status.get("uri") or f"{host}:{status_id}"
    account = status.get("account") or {}
    acct = str(account.get("acct") or account.get("username") or "") or None
    handle = None if acct is None else acct if "@" in acct else f"{acct}@{host}"
    parts = [str(status.get("spoiler_text") or "").strip(), html_to_text(str(status.get("content") or ""))]
    followers = account.get("followers_count")
    lang = status.get("language")
    thread = status.get("in_reply_to_id") or status_id  # a reply joins its parent's thread
    return Mention(
        source=source,
        external_id=str(uri)[:512],
        text="\n\n".join(p for p in parts if p),
        url=str(status.get("url") or uri),
        author_id=f"mastodon:{handle}"[:300] if handle else None,
        author_name=str(account.get("display_name") or "")[:300] or None,
        author_handle=handle[:100] if handle else None,
        author_followers=followers if isinstance(followers, int) else None,
        lang=None if lang in (None, "", "und") else str(lang),
        published_at=_published(status.get("created_at")),
        conversation_id=f"{thread}@{host}"[:64],
    )


class MastodonSource(Source):
    type = "mastodon"
    Config = MastodonConfig
    config: MastodonConfig

    def __init__(
        self,
        config: MastodonConfig,
        brands: Sequence[Any] = (),
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, brands)
        scoped = [b for b in brands if not config.brands or b.name in config.brands]
        self.terms = [config.query] if config.query else default_terms(scoped)
        self._targets: dict[str, _Target] = {}
        if self._token() is not None:
            home = config.instances[0]
            for term in self.terms:
                query = term if config.query or " " not in term else f'"{term}"'
                self._targets[f"{home} search:{term}"] = _Target(home, "search", query)
        for instance in config.instances:
            for tag in config.hashtags:
                self._targets[f"{instance} tag:{tag}"] = _Target(instance, "tag", tag)
        self._clients: dict[str, _Client] = {}
        self._rate_limited: dict[str, datetime] = {}
        self._unreachable: dict[str, tuple[float, str]] = {}
        self._monotonic = monotonic
        # Long enough to cover one poll's streams, short of the next poll.
        self._unreachable_for = min(UNREACHABLE_FOR, config.every.total_seconds() / 2)

    def _token(self) -> str | None:
        token = self.config.access_token
        return token.get_secret_value() if token is not None and token.get_secret_value() else None

    def disabled_reason(self) -> str | None:
        if not self.config.enabled:
            return "disabled in config (enabled: false)"
        if not self._targets:
            if self._token() is None:
                return (
                    f"nothing to read: no hashtags, and no access token to search with (Mastodon "
                    f"searches posts only for logged-in accounts): set {TOKEN_ENV} (or access_token) to "
                    f"a token of an account on {self.config.instances[0]}, or list hashtags"
                )
            return "nothing to read: no search terms (no brands, no query) and no hashtags"
        return None

    def streams(self) -> list[str]:
        return list(self._targets)

    def _api(self, instance: str) -> _Client:
        if instance not in self._clients:
            client = _client_class()(
                api_base_url=instance,
                # The token belongs to an account on the first instance: never send it elsewhere.
                access_token=self._token() if instance == self.config.instances[0] else None,
                ratelimit_method="throw",
                request_timeout=self.config.timeout.total_seconds(),
                mastodon_version=ASSUMED_VERSION,
                version_check_mode="created",
                session=requests.Session(),
                user_agent=USER_AGENT,
            )
            client.session.max_redirects = 5
            client.session.hooks["response"].append(client.record_error)
            self._clients[instance] = client
        return self._clients[instance]

    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        """Pages newest first; `since_id` moves to the newest id only after the last page."""
        target = self._targets.get(stream)
        if target is None:
            raise FatalSourceError(f"source {self.name}: no stream {stream!r} in its config")
        self._check_instance(target)
        since = _id_or_none(cursor.get("since_id"))
        newest = _id_or_none(cursor.get("newest_id"))
        max_id = _id_or_none(cursor.get("max_id"))
        remaining = limit
        for page in range(self.config.max_pages):
            if remaining is not None and remaining <= 0:
                return  # the monthly cap is reached; the cursor saved so far resumes next month
            size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            statuses = self._page(target, since, max_id, size)
            ids = [str(s["id"]) for s in statuses]
            in_window = [i for i in ids if since is None or _key(i) > _key(since)]
            fresh = {i for i in in_window if max_id is None or _key(i) < _key(max_id)}
            if fresh:
                top = max(fresh, key=_key)
                newest = top if newest is None or _key(top) > _key(newest) else newest
            full = len(statuses) >= size and len(in_window) == len(statuses)
            warning = None
            if full and not fresh:
                warning = (
                    f"{target.host} ignored the paging parameter max_id; "
                    "older posts of this poll's window may be missing"
                )
            more = full and bool(fresh) and not (since is None and page == self.config.max_pages - 1)
            if more:
                max_id = min(fresh, key=_key)
                next_cursor = {"since_id": since, "newest_id": newest, "max_id": max_id}
            else:
                next_cursor = {"since_id": newest or since}
            if remaining is not None:
                remaining -= len(statuses)
            yield Batch(
                stream=stream,
                cursor={k: v for k, v in next_cursor.items() if v},
                mentions=[
                    m
                    for s in statuses
                    if str(s["id"]) in fresh and (m := status_to_mention(self.name, target.host, s))
                ],
                reads=len(statuses),
                warning=warning,
            )
            if not more:
                return

    def _page(
        self, target: _Target, since: str | None, max_id: str | None, size: int
    ) -> list[dict[str, Any]]:
        if target.kind == "search":
            body = self._call(
                target,
                lambda api: api.search_v2(
                    target.value, resolve=False, result_type="statuses", max_id=max_id, limit=size
                ),
            )
            statuses = body.get("statuses") if isinstance(body, dict) else None
        else:
            statuses = self._call(
                target,
                lambda api: api.timeline_hashtag(target.value, since_id=since, max_id=max_id, limit=size),
            )
        if not isinstance(statuses, list):
            raise RetriableSourceError(
                f"source {self.name}: {target.host} returned an unexpected payload; will retry"
            )
        return [s for s in statuses if isinstance(s, dict) and s.get("id")]

    def _check_instance(self, target: _Target) -> None:
        """Fail at once when this instance just rate-limited us, or just failed for another stream."""
        where = f"source {self.name}: {target.host}"
        retry_at = self._rate_limited.get(target.instance)
        if retry_at is not None and retry_at > datetime.now(UTC):
            raise RetriableSourceError(
                f"{where} rate limit reached (429); resets at {retry_at.isoformat()}", retry_at=retry_at
            )
        failed = self._unreachable.get(target.instance)
        if failed is not None and self._monotonic() - failed[0] < self._unreachable_for:
            raise RetriableSourceError(f"{failed[1]} (not retried for this stream until the next poll)")

    def _call(self, target: _Target, request: Callable[[_Client], Any]) -> Any:
        """Run one API call; translate every failure into a SourceError that says what to do."""
        from mastodon import (
            MastodonAPIError,
            MastodonError,
            MastodonIllegalArgumentError,
            MastodonNetworkError,
            MastodonNotFoundError,
            MastodonRatelimitError,
            MastodonServerError,
            MastodonUnauthorizedError,
            MastodonVersionError,
        )

        where = f"source {self.name}: {target.host}"
        api = self._api(target.instance)
        api.ratelimit_reset = None  # so a 429 reports its own reset time, not an older response's
        try:
            result = request(api)
        except MastodonRatelimitError:
            reset = api.ratelimit_reset
            retry_at = datetime.fromtimestamp(reset, UTC) if reset else None
            if retry_at is not None:
                self._rate_limited[target.instance] = retry_at
            until = retry_at.isoformat() if retry_at else "later"
            raise RetriableSourceError(
                f"{where} rate limit reached (429); resets at {until}", retry_at=retry_at
            ) from None
        except MastodonUnauthorizedError as exc:
            if api.access_token:
                raise AccessRefusedError(
                    f"{where} refused the access token (401): {_detail(exc, api)}; check {TOKEN_ENV} "
                    f"(or access_token): it must be a token of an account on {target.host}"
                ) from None
            raise AccessRefusedError(
                f"{where} requires login to read this (401): {_detail(exc, api)}; remove the instance, "
                f"or list it first and set {TOKEN_ENV} (or access_token) to a token of an account on it"
            ) from None
        except MastodonNotFoundError as exc:
            raise FatalSourceError(
                f"{where} has no such API (404): {_detail(exc, api)}; check that {target.instance} is a "
                "Mastodon (or Mastodon-compatible) server"
            ) from None
        except MastodonServerError as exc:
            message = f"{where} server error ({_status(exc)}); will retry"
            self._unreachable[target.instance] = (self._monotonic(), message)
            raise RetriableSourceError(message) from None
        except MastodonNetworkError as exc:
            if isinstance(exc.__context__, requests.Timeout):
                message = f"{where} timed out after {self.config.timeout.total_seconds():g}s; will retry"
            else:
                message = f"{where} unreachable ({_network_cause(exc)}); will retry"
            self._unreachable[target.instance] = (self._monotonic(), message)
            raise RetriableSourceError(message) from None
        except MastodonAPIError as exc:
            status = _status(exc)
            if status is None:
                raise RetriableSourceError(f"{where} returned malformed JSON; will retry") from None
            if status in (408, 425):
                raise RetriableSourceError(f"{where} asked to retry later ({status}); will retry") from None
            if status == 403:
                raise AccessRefusedError(
                    f"{where} forbids this request (403): {_detail(exc, api)}; check that the access "
                    "token has the read scope and its account is approved and not suspended"
                ) from None
            what = f"the search {target.value!r}" if target.kind == "search" else f"#{target.value}"
            raise FatalSourceError(f"{where} rejected {what} ({status}): {_detail(exc, api)}") from None
        except (MastodonVersionError, MastodonIllegalArgumentError) as exc:
            raise FatalSourceError(f"{where}: Mastodon.py refused the request: {exc}") from None
        except MastodonError as exc:
            raise RetriableSourceError(f"{where} API error ({type(exc).__name__}); will retry") from None
        self._unreachable.pop(target.instance, None)
        return result

    def close(self) -> None:
        for client in self._clients.values():
            client.session.close()
        self._clients.clear()


def _id_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _status(exc: MastodonError) -> int | None:
    """The HTTP status of an API error: Mastodon.py puts it second in the args (none for bad JSON)."""
    return exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None


def _detail(exc: MastodonError, api: _Client) -> str:
    """The server's `error` message, else the HTTP reason: never the request (or its token)."""
    args = exc.args
    detail = (args[3] if len(args) > 3 else None) or api.last_error or (args[2] if len(args) > 2 else None)
    return str(detail or type(exc).__name__)[:300]


def _network_cause(exc: MastodonNetworkError) -> str:
    cause = exc.__context__
    return type(cause).__name__ if cause is not None else "network error"
