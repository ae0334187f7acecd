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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from monitor.confbase import Duration, Frozen
from monitor.mention import Mention


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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release network clients."""
