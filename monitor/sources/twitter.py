"""X (Twitter) recent search on API v2, through tweepy.

The stream cursor is `since_id` (the newest stored tweet). Pages come newest first, so while a
poll is paginating the cursor keeps the old `since_id` plus the `next_token` to resume from; only
when the last page is stored does `since_id` move to the newest id. A failure mid-way therefore
resumes where it stopped: no gap, no duplicate.

Recent search only covers the last 7 days and refuses an older `since_id` (HTTP 400). That happens
after a quiet week or a long outage; the search then restarts over the whole window (all of it is
newer than that `since_id`, and the pipeline skips what is already stored) instead of failing forever.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import requests
import tweepy
from pydantic import Field, SecretStr

from monitor.confbase import Duration
from monitor.errors import FatalSourceError, RetriableSourceError
from monitor.mention import Mention
from monitor.sources.base import Batch, Source, SourceConfig

TWEET_FIELDS = (
    "created_at,lang,conversation_id,public_metrics,referenced_tweets,in_reply_to_user_id,author_id"
)
USER_FIELDS = "username,name,verified,public_metrics"


class TwitterConfig(SourceConfig):
    type: Literal["twitter"] = "twitter"
    every: Duration = timedelta(minutes=5)
    bearer_token: SecretStr | None = None
    query: str | None = Field(default=None, max_length=4096)
    max_pages: int = Field(default=5, ge=1, le=100)


def default_query(brands: Sequence[Any]) -> str:
    """`("Alias one" OR alias OR @handle ...) -is:retweet` from the brands' names, aliases and handles."""
    terms: dict[str, None] = {}
    for brand in brands:
        for term in (brand.name, *brand.aliases):
            terms[f'"{term}"' if " " in term else term] = None
        for handle in brand.handles:
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
        return ["search"]

    def _api(self) -> tweepy.Client:
        if self._client is None:
            assert self.config.bearer_token is not None
            self._client = tweepy.Client(
                bearer_token=self.config.bearer_token.get_secret_value(),
                return_type=dict,
                wait_on_rate_limit=False,
            )
        return self._client

    def fetch(self, stream: str, cursor: dict[str, Any]) -> Iterator[Batch]:
        since_id = cursor.get("since_id")
        newest = cursor.get("newest_id")
        token = cursor.get("next_token")
        for _page in range(self.config.max_pages):
            try:
                body = self._search(since_id, token)
            except _StaleSinceId:
                since_id = newest = token = None
                body = self._search(None, None)
            meta = body.get("meta") or {}
            newest = newest or meta.get("newest_id")
            users = {str(u["id"]): u for u in (body.get("includes") or {}).get("users") or ()}
            mentions = [m for t in body.get("data") or () if (m := tweet_to_mention(self.name, t, users))]
            token = meta.get("next_token")
            if token:
                next_cursor = {"since_id": since_id, "newest_id": newest, "next_token": token}
            else:
                next_cursor = {"since_id": newest or since_id}
            yield Batch(stream=stream, cursor={k: v for k, v in next_cursor.items() if v}, mentions=mentions)
            if not token:
                return

    def _search(self, since_id: str | None, token: str | None) -> dict[str, Any]:
        try:
            result = self._api().search_recent_tweets(
                self.query,
                since_id=since_id,
                next_token=token,
                max_results=100,
                expansions="author_id",
                tweet_fields=TWEET_FIELDS,
                user_fields=USER_FIELDS,
            )
        except tweepy.TooManyRequests as exc:
            reset = exc.response.headers.get("x-rate-limit-reset") if exc.response is not None else None
            until = (
                datetime.fromtimestamp(int(reset), UTC).isoformat() if reset and reset.isdigit() else "later"
            )
            raise RetriableSourceError(f"X API rate limit reached (429); resets at {until}") from None
        except (tweepy.Unauthorized, tweepy.Forbidden) as exc:
            raise FatalSourceError(
                f"X API refused the request ({exc.response.status_code}): {_detail(exc)}"
            ) from None
        except tweepy.BadRequest as exc:
            if since_id and any(
                isinstance(e, dict) and "since_id" in (e.get("parameters") or {}) for e in exc.api_errors
            ):
                raise _StaleSinceId(f"X API refused since_id {since_id}: {_detail(exc)}") from None
            raise FatalSourceError(f"X API rejected the query {self.query!r}: {_detail(exc)}") from None
        except tweepy.TwitterServerError as exc:
            raise RetriableSourceError(
                f"X API server error ({exc.response.status_code}); will retry"
            ) from None
        except tweepy.HTTPException as exc:
            raise RetriableSourceError(f"X API error: {_detail(exc)}") from None
        except requests.RequestException as exc:
            raise RetriableSourceError(f"network error calling the X API: {type(exc).__name__}") from None
        return result if isinstance(result, dict) else {}

    def close(self) -> None:
        if self._client is not None:
            self._client.session.close()


class _StaleSinceId(FatalSourceError):
    """X refused the saved since_id (older than the 7-day search window); `fetch` restarts without it."""


def _detail(exc: tweepy.HTTPException) -> str:
    messages = list(exc.api_messages) or list(exc.api_errors) or [str(exc.response.reason)]
    return "; ".join(str(m) for m in messages)[:300]
