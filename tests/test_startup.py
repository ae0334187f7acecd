"""Start-up cost: the social-network client libraries load only when a source first calls its API.

Every `monitor` command imports the sources (through monitor.config); Mastodon.py, PRAW and tweepy
together add about a quarter of a second and 25 MB to that, atproto a second, for sources most
commands never poll.
"""

from __future__ import annotations

import subprocess
import sys

SDKS = ("mastodon", "praw", "prawcore", "tweepy", "atproto")


def sdks_loaded(code: str) -> list[str]:
    """The SDK modules loaded once `code` has run in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {SDKS!r}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip().splitlines()[-1:]


def test_commands_start_without_the_sdks() -> None:
    assert sdks_loaded("import monitor.cli, monitor.daemon, monitor.collector") == ["[]"]


def test_configured_sources_load_their_sdk_only_to_poll() -> None:
    code = """
from monitor.config import settings_from_dict
from monitor.sources import build_source
settings = settings_from_dict(env={}, raw={
    "brands": [{"name": "Acme", "aliases": ["Acme Corp"]}],
    "sources": [
        {"name": "x", "type": "twitter", "bearer_token": "t"},
        {"name": "masto", "type": "mastodon", "instances": ["https://mastodon.social"], "access_token": "t"},
        {"name": "reddit", "type": "reddit", "client_id": "i", "client_secret": "s", "subreddits": ["france"]},
    ],
})
for config in settings.sources:
    source = build_source(config, settings.brands)
    assert source.disabled_reason() is None and source.streams(), config.name
"""
    assert sdks_loaded(code) == ["[]"]
