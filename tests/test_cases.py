"""The seed arc through the CLI: complaint -> flag -> case -> assign -> contact -> happy follow-up -> resolve."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from monitor.cases import CaseBatch
from monitor.cli import main
from monitor.feedserver import FeedServer
from monitor.mention import Mention
from monitor.storage import queries
from monitor.storage.db import Database
from monitor.storage.tables import CASES, CaseEventRow, CaseRow

from feeds import blogger, seed_post
from servers import SlackWebhook, slack_webhook

REFUSAL = {
    "post": "1000",
    "published": "2010-07-29T18:40:00.000+02:00",
    "title": "Bouygues Télécom : 24 mois de réengagement pour 15 SMS ? Non merci !",
    "content": "<p>Mon engagement chez Bouygues Télécom arrive à son terme. L'opérateur m'appelle pour me proposer "
    "de prolonger mon contrat de 24 mois en échange de 15 petits SMS mensuels. Après des années de fidélité, "
    "c'est inadmissible. Je refuse bien entendu, et s'il le faut je vais résilier et changer d'opérateur.</p>",
    "author": "Jean-Marc",
}


def happy() -> dict[str, str]:
    title, body = seed_post()
    return {
        "post": "1001",
        "published": "2010-08-04T09:12:00.000+02:00",
        "title": title,
        "content": body,
        "author": "Jean-Marc",
    }


@pytest.fixture
def webhook() -> Iterator[SlackWebhook]:
    with slack_webhook() as hook:
        yield hook


def configure(tmp_path: Path, db_url: str, feed: str, webhook: SlackWebhook, **extra: Any) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        json.dumps(
            {
                "database": db_url,
                "brands": [{"name": "Bouygues Telecom", "aliases": ["Bouygues Télécom"]}],
                "sources": [{"type": "rss", "name": "blogs", "urls": [feed]}],
                "channels": {
                    "support": {"type": "slack", "webhook_url": webhook.url, "notify_resolved": True}
                },
                **extra,
            }
        )
    )
    return path


def cli(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_seed_arc_end_to_end(
    tmp_path: Path,
    db_url: str,
    feed_server: FeedServer,
    webhook: SlackWebhook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed = feed_server.add("/feeds/posts/default", blogger([REFUSAL]))
    config = configure(tmp_path, db_url, feed, webhook)
    assert cli(capsys, config, "collect", "--once")[0] == 0

    code, out, _ = cli(capsys, config, "cases", "list", "--format", "json")
    (case,) = json.loads(out)
    assert (case["id"], case["status"], case["severity"], case["author"]) == (1, "new", "high", "Jean-Marc")
    assert cli(capsys, config, "alerts", "send")[0] == 0
    assert "[HIGH] churn-threat — Bouygues Telecom — Jean-Marc" in webhook.posts[0]["text"]

    assert (
        cli(capsys, config, "cases", "assign", "1", "--to", "alice", "--by", "lead")[1]
        == "case #1 is assigned to alice\n"
    )
    assert cli(capsys, config, "cases", "contact", "1", "--note", "called him back", "--by", "alice")[0] == 0

    feed_server.add("/feeds/posts/default", blogger([happy(), REFUSAL]))  # he blogs again, happily
    assert cli(capsys, config, "collect", "--once")[0] == 0
    code, out, _ = cli(capsys, config, "cases", "list", "--format", "json")
    (case,) = json.loads(out)
    assert case["status"] == "contacted" and case["hint"] == "customer seems satisfied" and case["flags"] >= 1
    assert cli(capsys, config, "alerts", "send")[0] == 0  # the suggestion reaches the channel
    assert "customer seems satisfied (suggested: resolve the case)" in webhook.posts[-1]["text"]

    assert (
        cli(capsys, config, "cases", "resolve", "1", "--note", "he stays", "--by", "alice")[1]
        == "case #1 is now resolved\n"
    )
    code, out, _ = cli(capsys, config, "cases", "show", "1", "--format", "json")
    story = json.loads(out)
    events = [(e["event"], e["actor"]) for e in story["timeline"]]
    # The refusal raises two flags (churn-threat, then complaint): the case opens, then is flagged again.
    assert events == [
        ("opened", None),
        ("flagged", None),
        ("assigned", "lead"),
        ("contacted", "alice"),
        ("mention", None),
        ("hint", None),
        ("resolved", "alice"),
    ]
    opened = story["timeline"][0]
    assert "je vais résilier" in json.dumps(opened["flags"], ensure_ascii=False)
    assert opened["mention"]["complaint_score"] is not None
    assert story["case"]["first_contact_at"] and story["case"]["resolved_at"]

    assert cli(capsys, config, "alerts", "send")[0] == 0  # the resolution notice
    assert any("case resolved" in p["text"] for p in webhook.posts)
    code, out, _ = cli(capsys, config, "cases", "show", "1")
    assert code == 0 and "hint: customer seems satisfied" in " ".join(out.split())


def test_illegal_moves_and_unknown_cases_exit_1_with_what_is_allowed(
    tmp_path: Path,
    db_url: str,
    feed_server: FeedServer,
    webhook: SlackWebhook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = configure(tmp_path, db_url, feed_server.add("/f", blogger([REFUSAL])), webhook)
    cli(capsys, config, "collect")
    assert cli(capsys, config, "cases", "dismiss", "1", "--reason", "not a customer")[0] == 0
    code, _, err = cli(capsys, config, "cases", "contact", "1")
    assert code == 1 and "case #1 is dismissed: cannot contact it; allowed: reopen" in err
    code, _, err = cli(capsys, config, "cases", "show", "99")
    assert code == 1 and "case #99 does not exist" in err
    code, _, err = cli(capsys, config, "cases", "dismiss", "1")
    assert code == 2 and "--reason" in err
    assert cli(capsys, config, "cases", "reopen", "1")[0] == 0
    code, out, _ = cli(capsys, config, "cases", "list", "--status", "new", "--format", "json")
    assert [c["id"] for c in json.loads(out)] == [1]


def test_auto_resolve_closes_the_case_on_a_happy_follow_up(
    tmp_path: Path,
    db_url: str,
    feed_server: FeedServer,
    webhook: SlackWebhook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed = feed_server.add("/f", blogger([REFUSAL]))
    config = configure(tmp_path, db_url, feed, webhook, auto_resolve=True)
    cli(capsys, config, "collect")
    feed_server.add("/f", blogger([happy(), REFUSAL]))
    cli(capsys, config, "collect")
    out = cli(capsys, config, "cases", "list", "--status", "resolved", "--format", "json")[1]
    (case,) = json.loads(out)
    assert case["hint"] == "customer seems satisfied"
    story = json.loads(cli(capsys, config, "cases", "show", str(case["id"]), "--format", "json")[1])
    assert story["timeline"][-1]["event"] == "resolved" and story["timeline"][-1]["actor"] == "monitor"


def test_a_new_complaint_after_resolution_reopens_the_case(
    tmp_path: Path,
    db_url: str,
    feed_server: FeedServer,
    webhook: SlackWebhook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed = feed_server.add("/f", blogger([REFUSAL]))
    config = configure(tmp_path, db_url, feed, webhook)
    cli(capsys, config, "collect")
    cli(capsys, config, "cases", "resolve", "1")
    again = {
        **REFUSAL,
        "post": "1002",
        "published": "2010-09-01T10:00:00.000+02:00",
        "title": "Encore ! Je vais résilier",
    }
    feed_server.add("/f", blogger([again, REFUSAL]))
    cli(capsys, config, "collect")
    out = cli(capsys, config, "cases", "list", "--format", "json")[1]
    (case,) = json.loads(out)
    assert case["id"] == 1 and case["status"] == "new"
    kinds = [
        e["event"]
        for e in json.loads(cli(capsys, config, "cases", "show", "1", "--format", "json")[1])["timeline"]
    ]
    assert "reopened" in kinds


# Another node may open (or reopen) the author's case between this batch's read of the open
# cases and its write: the batch's flag then joins that case, as any later flag does.

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
BRAND = "Bouygues Telecom"


def _case(status: str, severity: str = "high") -> dict[str, Any]:
    return {
        "brand": BRAND,
        "author_key": "x:1",
        "status": status,
        "severity": severity,
        "priority": 30.0,
        "opened_at": NOW,
        "updated_at": NOW,
    }


@pytest.mark.parametrize("race", ["opened", "reopened", "opened-beside-a-closed-one"])
def test_a_case_another_node_opened_meanwhile_is_joined(db: Database, race: str) -> None:
    with db.session() as session:
        if race != "opened":
            session.execute(CASES.insert().values(_case("resolved")))
        (mention,) = queries.insert_mentions(
            session,
            [Mention(source="x", external_id="1", text="…", author_id="x:1", brand=BRAND, collected_at=NOW)],
        )
        batch = CaseBatch.load(session, [mention], NOW)  # no open case yet
        if race == "reopened":
            session.execute(update(CASES).values(status="new"))  # what the other node did meanwhile
        else:
            session.execute(CASES.insert().values(_case("new")))
        change = batch.flag(mention, "medium", 20.0)
        assert batch.write() == []
    assert (change.opened, change.escalated) == (False, False)
    with db.session() as session:
        open_case = session.scalar(select(CaseRow).where(CaseRow.status == "new"))
        assert open_case is not None and open_case.id == change.case_id and open_case.severity == "high"
        assert len(list(session.scalars(select(CaseRow)))) == (
            1 if race != "opened-beside-a-closed-one" else 2
        )
        (event,) = session.scalars(select(CaseEventRow))
        assert (event.case_id, event.kind, event.mention_id) == (open_case.id, "flagged", mention.id)


def test_a_follow_up_keeps_what_another_node_changed_meanwhile(db: Database) -> None:
    """A case the batch only touched (a follow-up joined it) gets its time; its status, severity
    and hint stay as another node or a user left them since the batch read it. A case the batch
    changed (escalated) gets the batch's values."""
    with db.session() as session:
        session.execute(CASES.insert().values(_case("new", severity="low")))
        session.execute(CASES.insert().values({**_case("new", severity="low"), "author_key": "x:2"}))
    later = NOW + timedelta(hours=1)
    posts = [
        Mention(source="x", external_id=str(n), text="…", author_id=f"x:{n}", brand=BRAND, collected_at=later)
        for n in (1, 2)
    ]
    with db.session() as session:
        follow_up, complaint = queries.insert_mentions(session, posts)
        batch = CaseBatch.load(session, [follow_up, complaint], later)
        session.execute(update(CASES).values(status="contacted", hint="called back"))  # meanwhile
        change = batch.flag(complaint, "high", 40.0)
        assert batch.attach_followups([follow_up]) == 1
        batch.write()
    assert change.escalated
    with db.session() as session:
        cases = {c.author_key: c for c in session.scalars(select(CaseRow))}
    touched, escalated = cases["x:1"], cases["x:2"]
    assert (touched.status, touched.severity, touched.hint, touched.updated_at) == (
        "contacted",
        "low",
        "called back",
        later,
    )
    assert (escalated.status, escalated.severity, escalated.priority, escalated.hint) == (
        "new",
        "high",
        40.0,
        None,
    )
    assert escalated.updated_at == later and escalated.resolved_at is None


def test_a_flag_reopens_the_authors_latest_closed_case(db: Database) -> None:
    with db.session() as session:
        first, last = (
            session.execute(CASES.insert().values(_case(status)).returning(CASES.c.id)).scalar_one()
            for status in ("dismissed", "resolved")
        )
        session.execute(CASES.insert().values({**_case("resolved"), "author_key": "x:2"}))
    with db.session() as session:
        (mention,) = queries.insert_mentions(
            session,
            [Mention(source="x", external_id="1", text="…", author_id="x:1", brand=BRAND, collected_at=NOW)],
        )
        batch = CaseBatch.load(session, [mention], NOW)
        batch.prepare([(mention, "medium", 20.0)])
        change = batch.flag(mention, "medium", 20.0)
        batch.write()
    assert (change.case_id, change.opened) == (last, True)
    with db.session() as session:
        statuses = {
            case_id: status for case_id, status in session.execute(select(CaseRow.id, CaseRow.status))
        }
    assert (statuses[first], statuses[last]) == ("dismissed", "new")
