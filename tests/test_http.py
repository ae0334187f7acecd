"""What may appear of a URL in logs and errors."""

from __future__ import annotations

import pytest

from monitor.http import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://news.example/rss?q=brand&hl=fr", "https://news.example/rss?q=brand&hl=fr"),
        ("https://user:hunter2@feeds.example/x", "https://***@feeds.example/x"),
        ("https://a.example/f?api_key=S3CR3T&q=b", "https://a.example/f?api_key=***&q=b"),
        ("https://a.example/f?q=b&access_token=S3CR3T", "https://a.example/f?q=b&access_token=***"),
        ("https://a.example/f?monkey=1", "https://a.example/f?monkey=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
