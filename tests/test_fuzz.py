"""Property tests: arbitrary input never crashes config loading, normalization or brand matching.

(The rules engine has its own property test in test_rules.py.) Every failure a user can cause with
a config file must be a ConfigError naming where; every post, however odd, must come out of
normalization storable (no NUL, bounded, UTC) and through the brand matcher without an exception.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.analysis.brands import BrandMatcher
from monitor.analysis.text import fold
from monitor.config import Brand, load_config, settings_from_dict
from monitor.errors import ConfigError
from monitor.mention import Mention
from monitor.pipeline import MAX_TEXT, normalize

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = st.sampled_from(
    [
        "database", "brands", "sources", "rules", "channels", "name", "aliases", "type", "urls", "every",
        "when", "words_any", "severity", "notify", "webhook_url", "languages", "retention_days",
        "aggregates", "rules_files", "enabled", "exclude", "handles", "max_bytes", "query",
    ]
)  # fmt: skip
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
TREES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@FUZZ
@given(raw=TREES)
def test_any_structure_is_settings_or_a_config_error(raw: object) -> None:
    try:
        settings_from_dict(raw, file="fuzz.yaml", env={})
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml"), str(exc)


@FUZZ
@given(text=st.text(max_size=300) | TREES.map(lambda tree: yaml.safe_dump(tree, allow_unicode=True)))
def test_any_file_content_is_settings_or_a_config_error(tmp_path_factory: object, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "monitor.yaml"  # type: ignore[attr-defined]
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path, env={})
    except ConfigError as exc:
        assert str(path) in str(exc), str(exc)


OPTIONAL_TEXT = st.none() | st.text(max_size=200)
WHEN = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.none()
    | st.just(UTC)
    | st.builds(timezone, st.timedeltas(timedelta(hours=-12), timedelta(hours=12))),
)


@FUZZ
@given(
    external_id=st.text(min_size=1, max_size=50),
    text=st.text(max_size=500) | st.text(max_size=5).map(lambda s: s * 30_000),
    title=OPTIONAL_TEXT,
    author=OPTIONAL_TEXT,
    lang=OPTIONAL_TEXT,
    published=WHEN,
)
def test_normalized_mentions_are_storable(
    external_id: str,
    text: str,
    title: str | None,
    author: str | None,
    lang: str | None,
    published: datetime | None,
) -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    mention = normalize(
        Mention(
            source="s",
            external_id=external_id,
            text=text,
            title=title,
            author_name=author,
            lang=lang,
            published_at=published,
        ),
        now,
    )
    for value in (mention.external_id, mention.text, mention.title, mention.author_name, mention.lang):
        assert value is None or "\x00" not in value
    assert len(mention.text) <= MAX_TEXT and (mention.title is None or len(mention.title) <= 2000)
    assert mention.lang is None or len(mention.lang) <= 8
    assert mention.published_at is None or mention.published_at.utcoffset() == timedelta(0)
    assert mention.collected_at == now


BRAND_NAMES = st.text(st.characters(categories=("L", "N")), min_size=2, max_size=12)


@FUZZ
@given(name=BRAND_NAMES, before=st.text(max_size=40), after=st.text(max_size=40))
def test_a_brand_named_between_spaces_is_found_and_nothing_crashes(
    name: str, before: str, after: str
) -> None:
    matcher = BrandMatcher([Brand(name=name)])
    assert matcher.match(f"{before} {name} {after}") in (name, None)
    # Between plain spaces and words that cannot extend it, the name is always found.
    if fold(name).strip() and fold(name) == " ".join(fold(name).split()):
        assert matcher.match(f"hello {name} world") == name
