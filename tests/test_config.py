"""Config errors name the file, the key path and what is expected; the CLI exits 2."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.confbase import parse_duration
from monitor.config import load_config
from monitor.errors import ConfigError
from monitor.sources import SOURCE_TYPES

ROOT = Path(__file__).resolve().parents[1]

VALID = """
brands:
  - name: Bouygues Telecom
sources:
  - type: rss
    name: blogs
    every: 15m
    urls: [https://example.com/feed]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return str(info.value)


def test_valid_config_loads_into_frozen_typed_settings(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, VALID), env={})
    (source,) = settings.sources
    assert source.every == timedelta(minutes=15)
    assert source.urls == ("https://example.com/feed",)
    assert settings.database == "sqlite:///monitor.db"
    with pytest.raises(ValueError, match="frozen"):
        source.every = timedelta(1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID.replace("every: 15m", "every: soon"), "sources[0].every: expected a duration like 30s"),
        (VALID.replace("every: 15m", "evry: 15m"), "sources[0].evry: unknown key"),
        (
            VALID.replace("type: rss", "type: gopher"),
            "sources[0]: unknown type 'gopher'; known types: 'rss', 'twitter'",
        ),
        (
            VALID.replace("    urls: [https://example.com/feed]\n", ""),
            "sources[0].urls: required key is missing",
        ),
        (
            VALID.replace("https://example.com/feed", "file:///etc/passwd"),
            "sources[0].urls[0]: only http:// and https://",
        ),
        (
            VALID.replace("https://example.com/feed", "/var/feeds/local.xml"),
            "sources[0].urls[0]: only http:// and https://",
        ),
        (VALID.replace("  - name: Bouygues Telecom\n", ""), "brands: "),
        (
            VALID + "rules:\n  - name: r\n    when: {wordz_any: [x]}\n",
            "rules[0].when: unknown condition 'wordz_any'; known",
        ),
        (
            VALID + "rules:\n  - name: r\n    when: {regex: '(unclosed'}\n",
            "rules[0].when.regex: invalid regular expression",
        ),
        (
            VALID + "rules:\n  - name: r\n    when: {words_any: [x]}\n    notify: [pager]\n",
            "rules[0].notify[0]: unknown channel 'pager'",
        ),
        (
            VALID + "rules:\n  - name: r\n    severity: urgent\n    when: {words_any: [x]}\n",
            "rules[0].severity: Input should be 'low', 'medium', 'high' or 'critical'",
        ),
        (VALID + "channels:\n  ops: {type: slack}\n", "channels.ops.webhook_url: required key is missing"),
        (
            VALID + "  - type: rss\n    name: blogs\n    urls: [https://example.com/b]\n",
            "sources[1].name: duplicate source name 'blogs'",
        ),
        ("brands: [\n", "invalid YAML: line 2"),
        ("- just\n- a list\n", "expected a mapping of settings at the top level"),
    ],
)
def test_config_errors_name_file_path_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "monitor.yaml"))
    assert expected in message


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    text = VALID + "channels:\n  ops: {type: slack, webhook_url: '${SLACK_URL}'}\n"
    message = error_of(tmp_path, text)
    assert "channels.ops.webhook_url: environment variable SLACK_URL is not set" in message
    settings = load_config(write(tmp_path, text), env={"SLACK_URL": "https://hooks.example/T/B/secret"})
    assert settings.channels["ops"].webhook_url.get_secret_value() == "https://hooks.example/T/B/secret"
    assert "secret" not in repr(settings)


def test_optional_environment_variable_with_default(tmp_path: Path) -> None:
    text = VALID + "  - {type: twitter, name: x, bearer_token: '${X_BEARER_TOKEN:-}'}\n"
    settings = load_config(write(tmp_path, text), env={})
    assert settings.sources[1].bearer_token is not None
    assert settings.sources[1].bearer_token.get_secret_value() == ""


def test_rules_files_are_merged_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "extra.yaml").write_text("rules:\n  - {name: outage, when: {words_any: [panne]}}\n")
    settings = load_config(write(tmp_path, VALID + "rules_files: [rules/extra.yaml]\n"), env={})
    assert [r.name for r in settings.rules or ()] == ["outage"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), ("1h30m", 5400), (90, 90)]
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "m5", "-5m", "0s", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_cli_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID.replace("every: 15m", "every: often"))
    assert main(["--config", str(path), "collect", "--once"]) == 2
    err = capsys.readouterr().err
    assert f"config error: {path}: sources[0].every: expected a duration" in err


def test_cli_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "mentions"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_config_resolution_uses_monitor_config_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID.replace("every: 15m", "every: never"))
    monkeypatch.setenv("MONITOR_CONFIG", str(path))
    assert main(["sources"]) == 2
    assert str(path) in capsys.readouterr().err


def test_init_writes_a_starter_that_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "monitor.yaml"
    assert main(["--config", str(target), "init"]) == 0
    settings = load_config(target, env={})
    assert settings.brands[0].name == "Bouygues Telecom"
    assert {s.type for s in settings.sources} == set(SOURCE_TYPES)  # the starter shows every source type
    assert main(["--config", str(target), "init"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_example_config_is_the_packaged_starter() -> None:
    packaged = (ROOT / "monitor" / "data" / "monitor.example.yaml").read_text()
    assert (ROOT / "config" / "monitor.example.yaml").read_text() == packaged


def test_source_without_type_is_a_config_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("type: rss", "kind: rss"))
    assert "sources[0]: missing `type:`" in message


def test_email_cannot_use_both_tls_modes(tmp_path: Path) -> None:
    text = VALID + (
        "channels:\n  mail: {type: email, host: smtp.example.com, from: a@example.com, to: [b@example.com],"
        " ssl: true, starttls: true}\n"
    )
    assert "channels.mail: choose one of `ssl: true`" in error_of(tmp_path, text)
