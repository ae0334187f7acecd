"""The CLI as users and tools see it: exit codes, JSON/CSV shapes, tables, demo."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.feedserver import FeedServer

from feeds import rss

MENTION_KEYS = {
    "id", "source", "external_id", "url", "author", "author_followers", "text", "lang",
    "published_at", "brand", "sentiment", "complaint_score",
}  # fmt: skip
REPORT_KEYS = {
    "flag_id", "case_id", "rule", "severity", "brand", "source", "author", "url", "text",
    "published_at", "status", "explanation",
}  # fmt: skip
HOSTILE = "[bold red]FAKE[/] <script>alert(1)</script> Bouygues Telecom: je vais résilier"
HOSTILE_TEXT = "[bold red]FAKE[/] Bouygues Telecom: je vais résilier"  # HTML stripped, markup kept as text


@pytest.fixture
def config(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Path:
    items = [
        {"title": "Bouygues Telecom", "description": HOSTILE, "link": "https://b.example/1", "guid": "1"},
        {
            "title": "Bouygues Telecom 5G",
            "description": "Nouvelle box.",
            "link": "https://b.example/2",
            "guid": "2",
        },
    ]
    url = feed_server.add("/rss", rss(items), content_type="application/rss+xml")
    return feed_config(tmp_path, db_url, url)


def feed_config(tmp_path: Path, db_url: str, url: str) -> Path:
    """A config file: the Bouygues Telecom brand and one RSS source on `url`."""
    path = tmp_path / "monitor.yaml"
    path.write_text(
        json.dumps(
            {
                "database": db_url,
                "brands": [{"name": "Bouygues Telecom"}],
                "sources": [{"type": "rss", "name": "blogs", "urls": [url]}],
            }
        )
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_mentions_and_report_json_shapes(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--config", str(config), "collect", "--once")[0] == 0
    code, out, _ = run(capsys, "--config", str(config), "mentions", "--format", "json")
    assert code == 0
    mentions = json.loads(out)
    assert len(mentions) == 2 and all(set(m) >= MENTION_KEYS for m in mentions)
    assert {m["external_id"] for m in mentions} == {"1", "2"}
    code, out, _ = run(capsys, "--config", str(config), "report", "--format", "json")
    assert code == 0
    (flagged,) = json.loads(out)
    assert set(flagged) >= REPORT_KEYS
    assert flagged["rule"] == "churn-threat" and flagged["status"] == "new"
    assert flagged["explanation"]["matched"] == ["threatens to leave: 'je vais résilier'"]
    assert flagged["text"] == HOSTILE_TEXT


def test_report_csv_and_output_file(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "--config", str(config), "collect")
    target = tmp_path / "report.csv"
    code, out, _ = run(capsys, "--config", str(config), "report", "--format", "csv", "--output", str(target))
    assert code == 0 and f"wrote {target}" in out
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert len(rows) == 1 and rows[0]["external_id"] == "1"
    assert rows[0]["explanation"] == "threatens to leave: 'je vais résilier'"


def test_tables_show_hostile_text_literally(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "--config", str(config), "collect")
    code, out, _ = run(capsys, "--config", str(config), "report")
    assert code == 0
    assert "[bold" in out and "FAKE[/]" in out  # rich markup in a post is shown, not interpreted
    assert "churn-threat" in out and "threatens to leave" in out and "résilier'" in out


def test_filters(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "--config", str(config), "collect")
    assert (
        json.loads(run(capsys, "--config", str(config), "report", "--format", "json", "--severity", "low")[1])
        == []
    )
    assert (
        len(
            json.loads(run(capsys, "--config", str(config), "report", "--format", "json", "--since", "1h")[1])
        )
        == 1
    )
    assert (
        json.loads(
            run(capsys, "--config", str(config), "mentions", "--format", "json", "--brand", "Orange")[1]
        )
        == []
    )
    assert (
        len(
            json.loads(
                run(capsys, "--config", str(config), "mentions", "--format", "json", "--limit", "1")[1]
            )
        )
        == 1
    )
    code, _, err = run(capsys, "--config", str(config), "report", "--since", "yesterday-ish")
    assert code == 2 and "expected a duration like 7d or a date" in err


def test_sources_shows_health(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", str(config), "sources", "--format", "json")
    assert code == 0
    (never,) = json.loads(out)
    assert never["last_ok_at"] is None and never["next_poll_at"] is None
    run(capsys, "--config", str(config), "collect")
    (polled,) = json.loads(run(capsys, "--config", str(config), "sources", "--format", "json")[1])
    assert (
        polled["status"] == "ok"
        and polled["last_ok_at"]
        and polled["next_poll_at"]
        and polled["mentions"] == 2
    )
    assert "blogs" in run(capsys, "--config", str(config), "sources")[1]


def test_unknown_source_name_is_a_usage_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--config", str(config), "collect", "--source", "nope")
    assert code == 2 and "unknown source 'nope'; known: blogs" in err


def test_db_upgrade(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.storage.db import MIGRATIONS

    head = sorted(p.name.split("_")[0] for p in (MIGRATIONS / "versions").glob("0*.py"))[-1]
    code, out, _ = run(capsys, "--config", str(config), "db", "upgrade")
    assert code == 0 and f"-> {head}" in out
    code, out, _ = run(capsys, "--config", str(config), "db", "upgrade")
    assert code == 0 and f"{head} -> {head}" in out


def test_unreachable_database_is_a_clear_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        json.dumps({"database": "postgresql://nobody:hunter22@127.0.0.1:1/none", "brands": [{"name": "B"}]})
    )
    code, _, err = run(capsys, "--config", str(path), "mentions")
    assert code == 1 and "cannot open database postgresql+psycopg://nobody:***@127.0.0.1:1/none" in err
    assert "hunter22" not in err


def test_demo_runs_offline_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo", "--format", "json")
    assert code == 0
    flagged: list[dict[str, Any]] = json.loads(out)
    rules = {(f["rule"], f["author"]) for f in flagged}
    assert ("churn-threat", "Jean-Marc") in rules and ("complaint", "Alice Martin") in rules
    assert all(f["brand"] == "Bouygues Telecom" for f in flagged)
    code, out, _ = run(capsys, "demo")
    assert code == 0 and "Collected 6 posts from 2 local feeds: 4 mention the brand" in out


def test_entry_points(tmp_path: Path) -> None:
    script = str(Path(sys.executable).with_name("monitor"))  # the console script installed beside python
    for command in ([sys.executable, "-m", "monitor", "--version"], [script, "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
        assert done.returncode == 0 and "monitor, version" in done.stdout
    done = subprocess.run([script, "frobnicate"], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 2 and "No such command" in done.stderr


def test_csv_neutralizes_spreadsheet_formulas() -> None:
    from monitor.report import render_to_string

    out = render_to_string(
        [{"text": '=HYPERLINK("http://evil")', "author": "@bob"}], "csv", table_columns=["text"]
    )
    row = next(csv.DictReader(io.StringIO(out)))
    assert row == {"text": '\'=HYPERLINK("http://evil")', "author": "'@bob"}


def test_sources_table_says_why_a_source_is_disabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{tmp_path / 'm.db'}",
                "brands": [{"name": "Bouygues Telecom"}],
                "sources": [{"type": "twitter", "name": "x", "bearer_token": "${X_BEARER_TOKEN:-}"}],
            }
        )
    )
    code, out, _ = run(capsys, "--config", str(path), "sources")
    assert code == 0 and "disabled" in out and "X_BEARER_TOKEN" in " ".join(out.split())


def test_report_table_has_a_summary_and_html_is_one_escaped_page(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "--config", str(config), "collect")
    code, out, _ = run(capsys, "--config", str(config), "report")
    assert (
        code == 0 and "Mentions: 2" in out and "Flags: 1 — churn-threat 1" in out and "Open cases: 1" in out
    )
    page = tmp_path / "report.html"
    code, out, _ = run(capsys, "--config", str(config), "report", "--format", "html", "--output", str(page))
    assert code == 0
    html = page.read_text(encoding="utf-8")
    assert html.count("<svg") == 3  # mentions per day, flags per day, open-case aging
    assert "<script>" not in html and "[bold red]FAKE[/]" in html


def test_tables_show_the_first_100_rows_and_say_so_scripts_get_all(
    tmp_path: Path, db_url: str, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A terminal gets the most urgent (or newest) 100 rows fast; json and csv get every row."""
    items = [
        {
            "title": f"Bouygues Telecom {n}",
            "description": "je vais résilier",
            "link": f"https://b.example/{n}",
            "guid": str(n),
        }
        for n in range(105)
    ]
    url = feed_server.add("/many", rss(items), content_type="application/rss+xml")
    config = ("--config", str(feed_config(tmp_path, db_url, url)))
    assert run(capsys, *config, "collect", "--once")[0] == 0
    for command, noun in (("mentions", "mentions"), ("report", "flagged posts")):
        _, out, _ = run(capsys, *config, command)
        assert f"the first 100 {noun} (more exist" in out
        _, out, _ = run(capsys, *config, command, "--limit", "0")
        assert f"105 {noun}" in out and "more exist" not in out
        _, out, _ = run(capsys, *config, command, "--format", "json")
        assert len(json.loads(out)) == 105
        _, out, _ = run(capsys, *config, command, "--format", "json", "--limit", "7")
        assert len(json.loads(out)) == 7
