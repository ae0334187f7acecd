"""Reddit through PRAW: new submissions matching the brand terms, and new comments naming them.

Two streams per source. `search:<subs>` pages through `/r/<subs>/search` sorted by new (`all`
when no subreddit is configured). `comments:<subs>` pages through `/r/<subs>/comments` (the
newest comments of those subreddits) and keeps those naming a brand: Reddit's API has no comment
search, and reading every comment of r/all is not possible at a sane cost, so that stream only
exists when `subreddits` is set.

Listings come newest first, named by fullnames (`t3_…` submissions, `t1_…` comments). The cursor
keeps the newest `created_utc` delivered (`newest`) and the fullnames delivered within OVERLAP of
it (`seen`). A poll reads from the top and stops at the first post older than `newest - OVERLAP`
(search results can appear late, so the last hour is read again; `seen` keeps those from being
sent twice). While a poll pages, its cursor keeps the old position plus `after` (the fullname to
continue after) and this pass's newest, so a failure or `max_pages` resumes where it stopped;
only when the pass reaches the old position does `newest` move. The first poll of a stream reads
back `backfill` (7 days by default).

PRAW is set up never to wait on its own: no update check, no async warning, each request bounded
by `timeout`, and when Reddit says the rate-limit window is used up the poll stops with a
RetriableSourceError parked until the reset, instead of prawcore sleeping up to ten minutes.
PRAW is imported lazily, on the first API call: most commands never poll.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import requests
from pydantic import Field, SecretStr, field_validator

from monitor import USER_AGENT
from monitor.confbase import Duration
from monitor.errors import AccessRefusedError, FatalSourceError, RetriableSourceError
from monitor.logs import RedactSecrets
from monitor.mention import Mention
from monitor.sources.base import Batch, Source, SourceConfig

if TYPE_CHECKING:
    import praw
    import prawcore

REDDIT_URL = "https://www.reddit.com"
OVERLAP = timedelta(hours=1)  # how far below the saved position each poll reads again
MAX_SEEN = 500  # fullnames kept in the cursor to skip what the overlap reads again
GONE = ("[removed]", "[deleted]")
_SUBREDDIT = r"^[A-Za-z0-9][A-Za-z0-9_]{1,20}$"
# prawcore logs requests at DEBUG; scrub the app secret and password on its loggers.
_REDACTOR = RedactSecrets([])
for _logger in ("praw", "prawcore"):
    logging.getLogger(_logger).addFilter(_REDACTOR)


def utcnow() -> datetime:
    return datetime.now(UTC)


class RedditConfig(SourceConfig):
    type: Literal["reddit"] = "reddit"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    username: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{3,20}$")
    password: SecretStr | None = None
    user_agent: str | None = Field(default=None, min_length=10, max_length=256)
    subreddits: tuple[str, ...] = Field(default=(), max_length=40)
    query: str | None = Field(default=None, min_length=1, max_length=512)
    comments: bool = True
    max_pages: int = Field(default=5, ge=1, le=10)
    page_size: int = Field(default=100, ge=1, le=100)
    backfill: Duration = timedelta(days=7)
    timeout: Duration = timedelta(seconds=30)

    @field_validator("username", mode="before")
    @classmethod
    def _bare_username(cls, value: Any) -> Any:
        """`u/name` or `name`; an empty value (an unset `${REDDIT_USERNAME:-}`) is no username."""
        if isinstance(value, str):
            value = value.strip().removeprefix("/").removeprefix("u/")
            return value or None
        return value

    @field_validator("subreddits", mode="before")
    @classmethod
    def _subreddit_names(cls, value: Any) -> Any:
        """Names with or without `r/`; `a+b` is split; `all` is spelled as an empty list."""
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            return value
        names: dict[str, None] = {}
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"expected subreddit names, got {item!r}")
            for part in item.split("+"):
                name = part.strip().removeprefix("/").removeprefix("r/").strip("/")
                if name.lower() in ("all", "popular"):
                    raise ValueError(f"r/{name} is not a subreddit: leave subreddits empty to search all")
                if not name:
                    continue
                names[name] = None
        return tuple(names)

    @field_validator("subreddits")
    @classmethod
    def _valid_subreddits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(_SUBREDDIT, name):
                raise ValueError(f"{name!r} is not a subreddit name (letters, digits, _; 2-21 chars)")
        return value


def default_query(brands: Sequence[Any]) -> str:
    """`"Alias one" OR alias ...` from the brands' names and aliases (Reddit's lucene syntax)."""
    terms: dict[str, None] = {}
    for brand in brands:
        for term in (brand.name, *brand.aliases):
            term = term.replace('"', " ").strip()
            if term:
                terms[f'"{term}"' if not term.isalnum() else term] = None
    return " OR ".join(terms)


def default_user_agent(username: str | None) -> str:
    """Reddit asks for `<platform>:<app id>:<version> (by u/<reddit username>)`."""
    base = f"python:{USER_AGENT.replace('/', ':', 1)}"
    return f"{base} (by u/{username})" if username else base


def _published(data: Mapping[str, Any]) -> datetime | None:
    created = data.get("created_utc")
    return datetime.fromtimestamp(float(created), UTC) if isinstance(created, int | float) else None


def _author(data: Mapping[str, Any]) -> str | None:
    author = data.get("author")  # a praw Redditor, or None when deleted
    name = str(author) if author is not None else None
    return name if name and name not in GONE else None


def _url(data: Mapping[str, Any]) -> str | None:
    permalink = data.get("permalink")
    return f"{REDDIT_URL}{permalink}" if isinstance(permalink, str) and permalink.startswith("/") else None


def submission_to_mention(source: str, data: Mapping[str, Any]) -> Mention:
    """A submission: its title, and its self text when it has one."""
    title = str(data.get("title") or "").strip()
    body = str(data.get("selftext") or "").strip()
    body = "" if body in GONE else body
    author = _author(data)
    fullname = str(data["name"])
    return Mention(
        source=source,
        external_id=fullname,
        text=f"{title}\n\n{body}" if body else title,
        url=_url(data),
        title=title or None,
        author_id=f"reddit:{author}" if author else None,
        author_handle=f"u/{author}" if author else None,
        published_at=_published(data),
        conversation_id=fullname,
    )


def comment_to_mention(source: str, data: Mapping[str, Any]) -> Mention | None:
    """A comment, in the conversation of its submission; removed or deleted ones are nothing."""
    body = str(data.get("body") or "").strip()
    if not body or body in GONE:
        return None
    author = _author(data)
    return Mention(
        source=source,
        external_id=str(data["name"]),
        text=body,
        url=_url(data),
        author_id=f"reddit:{author}" if author else None,
        author_handle=f"u/{author}" if author else None,
        published_at=_published(data),
        conversation_id=data.get("link_id"),
    )


@dataclass(slots=True)
class _RateBudget:
    """Reddit's rate-limit headers as last seen: requests left in the window and when it resets."""

    clock: Callable[[], datetime]
    remaining: float | None = None
    reset_at: datetime | None = None

    def update(self, headers: Mapping[str, str]) -> None:
        remaining, reset = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
        if remaining is None or reset is None:
            return
        try:
            self.remaining = float(remaining)
            self.reset_at = self.clock() + timedelta(seconds=float(reset))
        except ValueError:
            return

    def exhausted_until(self) -> datetime | None:
        """The reset time while the window is used up (prawcore would sleep until then)."""
        if self.remaining is None or self.remaining >= 1 or self.reset_at is None:
            return None
        return self.reset_at if self.reset_at > self.clock() else None


@cache
def _requestor_class() -> type[prawcore.Requestor]:
    """`_Requestor`, built on first use so that prawcore is only imported by a source that polls."""
    import prawcore

    class _Requestor(prawcore.Requestor):
        """prawcore's requestor with the source's timeout on every request (prawcore's sessions pass
        their own 16 s default), recording the rate-limit headers of each response."""

        def __init__(self, *args: Any, budget: _RateBudget, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.budget = budget

        def request(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> requests.Response:
            response = super().request(*args, timeout=self.timeout, **kwargs)
            self.budget.update(response.headers)
            return response

    return _Requestor


class RedditSource(Source):
    type = "reddit"
    Config = RedditConfig
    config: RedditConfig

    def __init__(self, config: RedditConfig, brands: Sequence[Any] = ()) -> None:
        super().__init__(config, brands)
        wanted = [b for b in self.brands if not config.brands or b.name in config.brands]
        self.query = config.query or default_query(wanted)
        # Imported here: monitor.config imports the sources, and the matcher imports monitor.config.
        from monitor.analysis.brands import BrandMatcher

        self.matcher = BrandMatcher(self.brands)
        self.clock: Callable[[], datetime] = utcnow
        self._budget = _RateBudget(clock=lambda: self.clock())
        self._session: requests.Session | None = None
        self._reddit: praw.Reddit | None = None

    @property
    def _subs(self) -> str:
        return "+".join(self.config.subreddits) or "all"

    def disabled_reason(self) -> str | None:
        if not self.config.enabled:
            return "disabled in config (enabled: false)"
        missing = [
            var
            for var, value in (
                ("REDDIT_CLIENT_ID", self.config.client_id),
                ("REDDIT_CLIENT_SECRET", _reveal(self.config.client_secret)),
            )
            if not (value or "").strip()
        ]
        if missing:
            return (
                f"no Reddit app credentials: set {' and '.join(missing)} "
                "(or the source's client_id / client_secret) to enable it"
            )
        if self.config.username and not _reveal(self.config.password):
            return (
                "username set without a password: set REDDIT_PASSWORD (or remove username to read as the app)"
            )
        return None

    def streams(self) -> list[str]:
        comments = [f"comments:{self._subs}"] if self.config.comments and self.config.subreddits else []
        return [f"search:{self._subs}", *comments]

    def _api(self) -> praw.Reddit:
        if self._reddit is None:
            import praw

            assert self.config.client_id and self.config.client_secret is not None
            secret = self.config.client_secret.get_secret_value()
            password = _reveal(self.config.password) or None
            for value in (secret, password):
                if value:
                    _REDACTOR.add(value)
            self._session = requests.Session()
            self._reddit = praw.Reddit(
                "DEFAULT",  # not a `praw_site` section from the environment
                client_id=self.config.client_id.strip(),
                client_secret=secret,
                username=self.config.username if password else None,
                password=password,
                user_agent=self.config.user_agent or default_user_agent(self.config.username),
                check_for_async=False,
                check_for_updates=False,
                ratelimit_seconds=0,
                requestor_class=_requestor_class(),
                requestor_kwargs={
                    "session": self._session,
                    "timeout": self.config.timeout.total_seconds(),
                    "budget": self._budget,
                },
            )
        return self._reddit

    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        """Pages newest first; `newest` moves only once a pass reaches the saved position."""
        if stream not in self.streams():
            raise FatalSourceError(f"source {self.name}: no stream {stream!r} (streams: {self.streams()})")
        kind = stream.split(":", 1)[0]
        if kind == "search" and not self.query:
            raise FatalSourceError(f"source {self.name}: no brand terms to search; set query or brands")
        newest: float | None = cursor.get("newest")
        seen: dict[str, float] = dict(cursor.get("seen") or {})
        after: str | None = cursor.get("after")
        if after and isinstance(cursor.get("floor"), int | float):
            floor = float(cursor["floor"])
            pass_newest: float | None = cursor.get("pass_newest")
            pass_seen: dict[str, float] = dict(cursor.get("pass_seen") or {})
        else:
            after = None
            start = self.clock() - self.config.backfill
            floor = newest - OVERLAP.total_seconds() if newest is not None else start.timestamp()
            pass_newest, pass_seen = None, {}
        remaining = limit
        for _page in range(self.config.max_pages):
            if remaining is not None and remaining < 1:
                return  # the monthly read cap would be exceeded by another page
            size = self.config.page_size if remaining is None else min(self.config.page_size, remaining)
            children, next_after = self._page(kind, after, size)
            if remaining is not None:
                remaining -= len(children)
            mentions: list[Mention] = []
            done = not next_after or not children
            for item in children:
                data = vars(item)
                fullname, created = data.get("name"), data.get("created_utc")
                if not isinstance(fullname, str) or not isinstance(created, int | float):
                    continue
                if created < floor:
                    done = True  # the saved position (or the backfill start): the rest is older
                    break
                pass_newest = max(created, pass_newest or created)
                if fullname in seen or fullname in pass_seen:
                    continue
                mention = self._mention(item, data)
                if mention is not None:
                    mentions.append(mention)
                    pass_seen[fullname] = float(created)
            if done:
                position = _latest(newest, pass_newest)
                next_cursor: dict[str, Any] = {
                    "newest": position,
                    "seen": _recent({**seen, **pass_seen}, position),
                }
            else:
                next_cursor = {
                    "newest": newest,
                    "seen": seen,
                    "floor": floor,
                    "after": next_after,
                    "pass_newest": pass_newest,
                    "pass_seen": _recent(pass_seen, pass_newest),
                }
            yield Batch(
                stream=stream,
                cursor={k: v for k, v in next_cursor.items() if v is not None and v != {}},
                mentions=mentions,
                reads=len(children),
            )
            if done:
                return
            after = next_after

    def _mention(self, item: Any, data: Mapping[str, Any]) -> Mention | None:
        from praw.models import Comment, Submission

        if isinstance(item, Submission):
            return submission_to_mention(self.name, data)
        if isinstance(item, Comment):
            mention = comment_to_mention(self.name, data)
            # Reddit cannot search comments: keep only those naming a brand.
            if mention is not None and self.matcher.match(mention.text, self.config.brands):
                return mention
        return None

    def _page(self, kind: str, after: str | None, size: int) -> tuple[list[Any], str | None]:
        """One listing page (one request): its children and the `after` of the next page."""
        from praw.models import Comment, Listing, Submission

        params: dict[str, str | int] = {"limit": size}
        if after:
            params["after"] = after
        if kind == "search":
            path = f"r/{self._subs}/search/"
            # What praw's Subreddit.search sends, one page at a time so each page is one request.
            params.update(
                q=self.query,
                sort="new",
                syntax="lucene",
                t="all",
                restrict_sr="on" if self.config.subreddits else "off",
            )
        else:
            path = f"r/{self._subs}/comments/"
        listing = self._call(lambda api: api.get(path, params=params))
        if not isinstance(listing, Listing):
            raise RetriableSourceError(
                f"source {self.name}: Reddit returned an unexpected payload; will retry"
            )
        wanted = Submission if kind == "search" else Comment
        children = [c for c in listing.children if isinstance(c, wanted)]
        next_after = listing.after if isinstance(listing.after, str) and listing.after else None
        return children, next_after

    def _call(self, request: Callable[[praw.Reddit], Any]) -> Any:
        """Run one API call; translate every failure into a SourceError that says what to do."""
        import prawcore
        from praw.exceptions import PRAWException

        where = f"source {self.name}"
        api = self._api()
        reset = self._budget.exhausted_until()
        if reset is not None:
            raise RetriableSourceError(
                f"{where}: Reddit API rate limit used up for this window; resets at {reset.isoformat()}",
                retry_at=reset,
            )
        subs = f"r/{self._subs}"
        try:
            return request(api)
        except prawcore.OAuthException as exc:
            raise AccessRefusedError(
                f"{where}: Reddit refused the login ({exc.error}): "
                "check REDDIT_USERNAME / REDDIT_PASSWORD (the account must be a developer of the "
                "script app, without two-factor authentication)"
            ) from None
        except prawcore.Redirect as exc:
            raise FatalSourceError(
                f"{where}: {subs} does not exist (Reddit redirected to {exc.path}); check subreddits"
            ) from None
        except prawcore.BadJSON:
            raise RetriableSourceError(f"{where}: Reddit returned malformed JSON; will retry") from None
        except prawcore.ResponseException as exc:
            raise self._response_error(where, subs, exc.response) from None
        except prawcore.RequestException as exc:
            if isinstance(exc.original_exception, requests.Timeout):
                raise RetriableSourceError(
                    f"{where}: Reddit timed out after {self.config.timeout.total_seconds():g}s; will retry"
                ) from None
            raise RetriableSourceError(
                f"{where}: network error calling Reddit: {type(exc.original_exception).__name__}"
            ) from None
        except (PRAWException, ValueError, TypeError, KeyError, AttributeError):
            # praw could not read the body as a listing (or the rate-limit headers were garbled)
            raise RetriableSourceError(
                f"{where}: Reddit returned an unexpected payload; will retry"
            ) from None

    def _response_error(self, where: str, subs: str, response: requests.Response) -> Exception:
        from prawcore.const import ACCESS_TOKEN_PATH

        status = response.status_code
        reason = _reason(response)
        token_call = response.url.split("?", 1)[0].endswith(ACCESS_TOKEN_PATH)
        if status == 429:
            retry_at = self._retry_at(response)
            until = retry_at.isoformat() if retry_at else "later"
            return RetriableSourceError(
                f"{where}: Reddit API rate limit reached (429); resets at {until}", retry_at=retry_at
            )
        if status == 401 or (token_call and status in (400, 403)):
            return AccessRefusedError(
                f"{where}: Reddit refused the app credentials ({status}); "
                'check REDDIT_CLIENT_ID / REDDIT_CLIENT_SECRET (a "script" app\'s id and secret)'
            )
        if status == 403 and reason in ("private", "quarantined", "gated", "banned"):
            return FatalSourceError(
                f"{where}: {subs} is {reason} (403); remove it from subreddits, "
                "or log in as an account allowed to read it"
            )
        if status == 403:
            return AccessRefusedError(
                f"{where}: Reddit forbids this request (403{': ' + reason if reason else ''}); "
                "check the app's credentials and user_agent"
            )
        if status == 404:
            what = "is banned" if reason == "banned" else "was not found"
            return FatalSourceError(f"{where}: {subs} {what} (404); check subreddits")
        if status == 400:
            return FatalSourceError(f"{where}: Reddit rejected the search query {self.query!r} (400)")
        if status >= 500:
            return RetriableSourceError(f"{where}: Reddit server error ({status}); will retry")
        return FatalSourceError(f"{where}: unexpected HTTP {status} from Reddit")

    def _retry_at(self, response: requests.Response) -> datetime | None:
        for header in ("x-ratelimit-reset", "retry-after"):
            value = response.headers.get(header)
            try:
                seconds = float(value) if value is not None else None
            except ValueError:
                continue
            if seconds is not None and seconds >= 0:
                return self.clock() + timedelta(seconds=seconds)
        return None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = self._reddit = None


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def _reason(response: requests.Response) -> str | None:
    """Reddit's error body: `{"reason": "private", "message": "Forbidden", "error": 403}`."""
    try:
        body = response.json()
    except ValueError:
        return None
    reason = body.get("reason") if isinstance(body, dict) else None
    return str(reason) if reason else None


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _recent(seen: dict[str, float], newest: float | None) -> dict[str, float]:
    """The fullnames a later pass may read again (within OVERLAP of `newest`), at most MAX_SEEN."""
    if newest is None:
        return {}
    floor = newest - OVERLAP.total_seconds()
    kept = sorted(((t, f) for f, t in seen.items() if t >= floor), reverse=True)[:MAX_SEEN]
    return {f: t for t, f in kept}
