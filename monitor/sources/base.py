"""The one interface every source implements.

A source turns its saved cursor into new mentions and the next cursor. It never writes to the
database: the collector hands each batch to `pipeline.ingest`, which stores the mentions and
the cursor in one transaction, so a crash never skips or repeats work.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from monitor.confbase import Duration, Frozen
from monitor.mention import Mention

FETCH_WORKERS = 8  # threads of the default `fetch_many`: streams of one source fetched at once


class SourceConfig(Frozen):
    """Settings every source has; each source type extends it with its own keys."""

    type: str
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    every: Duration = timedelta(minutes=15)
    enabled: bool = True
    brands: tuple[str, ...] = ()
    monthly_read_cap: int | None = Field(default=None, gt=0)
    price_per_read: float = Field(default=0.0, ge=0)


@dataclass(slots=True)
class Batch:
    """Mentions fetched from one stream of a source, and the cursor to save with them."""

    stream: str
    cursor: dict[str, Any]
    mentions: list[Mention] = field(default_factory=list)
    not_modified: bool = False
    reads: int = 0  # posts the provider bills for (retweets included), for the monthly cap
    warning: str | None = None  # a partial failure that did not stop the batch


@dataclass(slots=True)
class StreamRequest:
    """One stream to fetch in `Source.fetch_many`: its saved cursor and the reads left."""

    stream: str
    cursor: dict[str, Any]
    limit: int | None = None


@dataclass(slots=True)
class Fetched:
    """What fetching one stream gave: its batches, and the error that stopped it (if any).

    Batches before the error are kept, as with `fetch`.
    """

    stream: str
    batches: list[Batch]
    error: Exception | None = None


class Source(ABC):
    """A collector. Subclasses set `type` and `Config`, and implement `streams` and `fetch`."""

    type: ClassVar[str]
    # The fewest billed reads one request can cost (X's search pages are at least 10 posts):
    # with fewer left under a monthly cap, the source is parked rather than left silently idle.
    min_request_reads: ClassVar[int] = 1
    # Streams independent of each other (feed URLs) may be fetched concurrently; streams that
    # share a rate limit (one API token) are fetched one after another.
    parallel_streams: ClassVar[bool] = False
    Config: ClassVar[builtins.type[SourceConfig]]  # `type` is the class attribute above

    def __init__(self, config: SourceConfig, brands: Sequence[Any] = ()) -> None:
        self.config = config
        self.brands = tuple(brands)

    @property
    def name(self) -> str:
        return self.config.name

    def fingerprint(self) -> str:
        """A hash of this source's settings (secrets included, never stored in clear).

        A stream parked "until the config changes" is retried when this changes.
        """

        def reveal(value: Any) -> Any:
            return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

        settings = json.dumps(self.config.model_dump(), default=reveal, sort_keys=True)
        return hashlib.sha256(settings.encode()).hexdigest()

    def disabled_reason(self) -> str | None:
        """Why this source cannot run (e.g. missing credentials), or None when it can."""
        return None if self.config.enabled else "disabled in config (enabled: false)"

    @abstractmethod
    def streams(self) -> list[str]:
        """The independent cursors of this source (one per feed URL, one per API endpoint...)."""

    @abstractmethod
    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        """Yield batches of new mentions, each with the cursor that follows it.

        `limit` is how many billed reads are left this month (None: no cap); a source that bills
        per read must not exceed it. Raise a `SourceError` on failure: batches already yielded are
        kept, the rest is retried from the last saved cursor on the next poll.
        """

    def fetch_many(self, requests: Sequence[StreamRequest]) -> Generator[Fetched, None, None]:
        """Fetch several streams at once (a source with `parallel_streams`); yield each stream's
        outcome in the order asked, as soon as it and those before it are in.

        A failure in one stream is that stream's `Fetched.error` and does not stop the others.
        Closing the generator early cancels what has not been fetched yet. This default runs
        `fetch` in up to `FETCH_WORKERS` threads; a source can do it cheaper (RSS: one event loop).
        """
        if not requests:
            return
        pool = ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(requests)), thread_name_prefix="fetch")
        futures: list[Future[Fetched]] = [pool.submit(self._fetch_all, request) for request in requests]
        try:
            for future in futures:
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_all(self, request: StreamRequest) -> Fetched:
        """Run one stream's `fetch` to its end; keep what came before a failure."""
        batches: list[Batch] = []
        try:
            for batch in self.fetch(request.stream, request.cursor, limit=request.limit):
                batches.append(batch)
        except Exception as exc:  # noqa: BLE001 - handed to the collector, which records it on the stream
            return Fetched(request.stream, batches, exc)
        return Fetched(request.stream, batches)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release network clients."""
