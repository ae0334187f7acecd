"""X (Twitter) on API v2 through tweepy: recent search, and optionally the brand's mention timeline.

The stream cursor is `since_id` (the newest stored tweet). Pages come newest first, so while a
poll is paginating the cursor keeps the old `since_id` plus the `next_token` to resume from; only
when the last page is stored does `since_id` move to the newest id. A failure mid-way therefore
resumes where it stopped: no gap, no duplicate.

Recent search only covers the last 7 days and refuses an older `since_id` (HTTP 400). That happens
after a quiet week or a long outage; the search then restarts over the whole window (all of it is
newer than that `since_id`, and the pipeline skips what is already stored) instead of failing forever.

tweepy is imported lazily, on the first API call: most commands never poll.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import requests
from pydantic import Field, SecretStr
from requests.adapters import HTTPAdapter

from monitor.confbase import Duration
from monitor.errors import AccessRefusedError, FatalSourceError, RetriableSourceError
from monitor.logs import RedactSecrets
from monitor.mention import Mention
from monitor.sources.base import Batch, Source, SourceConfig

if TYPE_CHECKING:
    import tweepy

TWEET_FIELDS = (
    "created_at,lang,conversation_id,public_metrics,referenced_tweets,in_reply_to_user_id,author_id"
)
USER_FIELDS = "username,name,verified,public_metrics"
MIN_RESULTS = 10  # recent search refuses max_results below 10
X_HANDLE = re.compile(r"^@?[A-Za-z0-9_]{1,15}$")
# tweepy logs request headers (the bearer token) at DEBUG: scrub them on tweepy's own logger,
# whatever handlers the embedding program installs.
_TWEEPY_REDACTOR = RedactSecrets([])
logging.getLogger("tweepy.client").addFilter(_TWEEPY_REDACTOR)


class TwitterConfig(SourceConfig):
    type: Literal["twitter"] = "twitter"
    every: Duration = timedelta(minutes=5)
    bearer_token: SecretStr | None = None
    query: str | None = Field(default=None, max_length=4096)
    max_pages: int = Field(default=5, ge=1, le=100)
    mentions_of: str | None = Field(default=None, pattern=X_HANDLE.pattern)
    timeout: Duration = timedelta(seconds=30)
    price_per_read: float = Field(default=0.005, ge=0)


class _TimeoutAdapter(HTTPAdapter):
    """tweepy has no timeout setting; without one a stalled connection would hang a poll forever."""

    def __init__(self, timeout: float) -> None:
        super().__init__(max_retries=0)
        self.timeout = timeout

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["timeout"] = kwargs.get("timeout") or self.timeout
        return super().send(request, **kwargs)


def default_query(brands: Sequence[Any]) -> str:
    """`("Alias one" OR alias OR @handle ...) -is:retweet` from the brands' names, aliases and handles."""
    terms: dict[str, None] = {}
    for brand in brands:
        for term in (brand.name, *brand.aliases):
            terms[f'"{term}"' if " " in term else term] = None
        for handle in brand.handles:
            if X_HANDLE.match(handle):  # not `@brand@mastodon.social` or `@brand.bsky.social`
                terms[handle] = None
    return f"({' OR '.join(terms)}) -is:retweet"


def tweet_to_mention(source: str, tweet: dict[str, Any], users: dict[str, dict[str, Any]]) -> Mention | None:
    """A tweet as a Mention; retweets are not mentions (their original is)."""
    if any(ref.get("type") == "retweeted" for ref in tweet.get("referenced_tweets") or ()):
        return None
    user = users.get(str(tweet.get("author_id")), {})
    username = user.get("username")
    tweet_id = str(tweet["id"])
    created = tweet.get("created_at")
    lang = tweet.get("lang")
    return Mention(
        source=source,
        external_id=tweet_id,
        text=tweet.get("text") or "",
        url=f"https://x.com/{username or 'i/web'}/status/{tweet_id}",
        author_id=f"x:{tweet['author_id']}" if tweet.get("author_id") else None,
        author_name=user.get("name"),
        author_handle=username,
        author_followers=(user.get("public_metrics") or {}).get("followers_count"),
        lang=None if lang in (None, "und", "zxx", "qme", "qht") else lang,
        published_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
        conversation_id=tweet.get("conversation_id"),
    )


class TwitterSource(Source):
    type = "twitter"
    Config = TwitterConfig
    min_request_reads = MIN_RESULTS
    config: TwitterConfig

    def __init__(self, config: TwitterConfig, brands: Sequence[Any] = ()) -> None:
        super().__init__(config, brands)
        self.query = config.query or default_query(brands)
        self._client: tweepy.Client | None = None

    def disabled_reason(self) -> str | None:
        if not self.config.enabled:
            return "disabled in config (enabled: false)"
        if self.config.bearer_token is None or not self.config.bearer_token.get_secret_value():
            return "no bearer token: set X_BEARER_TOKEN (or the source's bearer_token) to enable it"
        return None

    def streams(self) -> list[str]:
        handle = self.config.mentions_of
        return ["search", *([f"mentions:@{handle.lstrip('@')}"] if handle else [])]

    def _api(self) -> tweepy.Client:
        if self._client is None:
            import tweepy

            assert self.config.bearer_token is not None
            self._client = tweepy.Client(
                bearer_token=self.config.bearer_token.get_secret_value(),
                return_type=dict,
                wait_on_rate_limit=False,
            )
            _TWEEPY_REDACTOR.add(self.config.bearer_token.get_secret_value())
            adapter = _TimeoutAdapter(self.config.timeout.total_seconds())
            self._client.session.mount("https://", adapter)
            self._client.session.mount("http://", adapter)
        return self._client

    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        """Pages newest first; `since_id` moves to the newest id only after the last page."""
        since_id = cursor.get("since_id")
        newest = cursor.get("newest_id")
        token = cursor.get("next_token")
        user_id = cursor.get("user_id")
        if stream.startswith("mentions:") and not user_id:
            user_id = self._user_id(stream.split(":", 1)[1].lstrip("@"))
        remaining = limit
        for _page in range(self.config.max_pages):
            if remaining is not None and remaining < MIN_RESULTS:
                return  # the monthly cap would be exceeded by another page
            page_size = 100 if remaining is None else min(100, remaining)
            try:
                body = self._page(stream, user_id, since_id, token, page_size)
            except _StaleSinceId:
                since_id = newest = token = None
                body = self._page(stream, user_id, None, None, page_size)
            meta = body.get("meta") or {}
            newest = newest or meta.get("newest_id")
            tweets = [t for t in body.get("data") or () if isinstance(t, dict) and t.get("id")]
            users = {str(u.get("id")): u for u in (body.get("includes") or {}).get("users") or ()}
            mentions = [m for t in tweets if (m := tweet_to_mention(self.name, t, users))]
            token = meta.get("next_token")
            if token:
                next_cursor = {"since_id": since_id, "newest_id": newest, "next_token": token}
            else:
                next_cursor = {"since_id": newest or since_id}
            next_cursor["user_id"] = user_id
            if remaining is not None:
                remaining -= len(tweets)
            yield Batch(
                stream=stream,
                cursor={k: v for k, v in next_cursor.items() if v},
                mentions=mentions,
                reads=len(tweets),
                warning=_partial_errors(body),
            )
            if not token:
                return

    def _page(
        self, stream: str, user_id: str | None, since_id: str | None, token: str | None, size: int
    ) -> dict[str, Any]:
        fields = {"expansions": "author_id", "tweet_fields": TWEET_FIELDS, "user_fields": USER_FIELDS}
        if stream == "search":
            return self._call(
                lambda api: api.search_recent_tweets(
                    self.query, since_id=since_id, next_token=token, max_results=max(size, 10), **fields
                ),
                since_id,
            )
        return self._call(
            lambda api: api.get_users_mentions(
                user_id, since_id=since_id, pagination_token=token, max_results=max(size, 5), **fields
            ),
            since_id,
        )

    def _user_id(self, username: str) -> str:
        body = self._call(lambda api: api.get_user(username=username), None)
        user_id = (body.get("data") or {}).get("id")
        if not user_id:
            raise FatalSourceError(
                f"source {self.name}: X account @{username} not found (check mentions_of): {_partial_errors(body)}"
            )
        return str(user_id)

    def _call(self, request: Callable[[tweepy.Client], Any], since_id: str | None) -> dict[str, Any]:
        """Run one API call; translate every failure into a SourceError that says what to do."""
        import tweepy

        where = f"source {self.name}"
        try:
            result = request(self._api())
        except tweepy.TooManyRequests as exc:
            reset = exc.response.headers.get("x-rate-limit-reset") if exc.response is not None else None
            retry_at = datetime.fromtimestamp(int(reset), UTC) if reset and reset.isdigit() else None
            until = retry_at.isoformat() if retry_at else "later"
            raise RetriableSourceError(
                f"{where}: X API rate limit reached (429); resets at {until}", retry_at=retry_at
            ) from None
        except tweepy.Unauthorized as exc:
            raise AccessRefusedError(
                f"{where}: X API refused the bearer token (401): {_detail(exc)}; "
                "check X_BEARER_TOKEN (or bearer_token)"
            ) from None
        except tweepy.Forbidden as exc:
            raise AccessRefusedError(
                f"{where}: X API forbids this request (403): {_detail(exc)}; "
                "check the app's access level and that it is attached to a project"
            ) from None
        except tweepy.BadRequest as exc:
            if since_id and any(
                isinstance(e, dict) and "since_id" in (e.get("parameters") or {}) for e in exc.api_errors
            ):
                raise _StaleSinceId(f"X API refused since_id {since_id}: {_detail(exc)}") from None
            raise FatalSourceError(
                f"{where}: X API rejected the query {self.query!r}: {_detail(exc)}"
            ) from None
        except tweepy.TwitterServerError as exc:
            raise RetriableSourceError(
                f"{where}: X API server error ({exc.response.status_code}); will retry"
            ) from None
        except tweepy.HTTPException as exc:
            raise RetriableSourceError(f"{where}: X API error: {_detail(exc)}") from None
        except requests.JSONDecodeError:
            raise RetriableSourceError(f"{where}: X API returned malformed JSON; will retry") from None
        except requests.Timeout:
            raise RetriableSourceError(
                f"{where}: X API timed out after {self.config.timeout.total_seconds():g}s; will retry"
            ) from None
        except requests.RequestException as exc:
            raise RetriableSourceError(
                f"{where}: network error calling the X API: {type(exc).__name__}"
            ) from None
        if not isinstance(result, dict):
            raise RetriableSourceError(f"{where}: X API returned an unexpected payload; will retry")
        return result

    def close(self) -> None:
        if self._client is not None:
            self._client.session.close()


class _StaleSinceId(FatalSourceError):
    """X refused the saved since_id (older than the 7-day search window); `fetch` restarts without it."""


def _partial_errors(body: dict[str, Any]) -> str | None:
    """X may return `errors` next to `data` (e.g. a deleted author): keep the data, report these."""
    errors = [e for e in body.get("errors") or () if isinstance(e, dict)]
    if not errors:
        return None
    details = "; ".join(str(e.get("detail") or e.get("title") or e) for e in errors[:3])
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"X API returned {len(errors)} partial error(s) with the data: {details}{more}"


def _detail(exc: tweepy.HTTPException) -> str:
    messages = list(exc.api_messages) or list(exc.api_errors) or [str(exc.response.reason)]
    return "; ".join(str(m) for m in messages)[:300]
