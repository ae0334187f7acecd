"""Source registry: config `type:` name -> Source class. Adding a source is one file plus one line here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitor.sources.base import Batch, Fetched, Source, SourceConfig, StreamRequest
from monitor.sources.bluesky import BlueskySource
from monitor.sources.hackernews import HackerNewsSource
from monitor.sources.mastodon import MastodonSource
from monitor.sources.reddit import RedditSource
from monitor.sources.rss import RssSource
from monitor.sources.twitter import TwitterSource

SOURCE_TYPES: dict[str, type[Source]] = {
    cls.type: cls
    for cls in (RssSource, TwitterSource, MastodonSource, BlueskySource, RedditSource, HackerNewsSource)
}


def build_source(config: SourceConfig, brands: Sequence[Any] = ()) -> Source:
    """The Source for a validated config entry; `brands` lets a source build its default query."""
    return SOURCE_TYPES[config.type](config, brands)


__all__ = ["SOURCE_TYPES", "Batch", "Fetched", "Source", "SourceConfig", "StreamRequest", "build_source"]
