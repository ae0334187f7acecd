"""kill -9 `monitor run` at random moments, restart it, and check that nothing was lost or doubled.

    python tests/crash_harness.py --runs 50 --seed 1     (or `make crash`)

Each run starts `monitor run` on a SQLite database against local feeds and a local Slack-like
webhook, lets it work for a random time (collection, ingest and alert delivery all happen in
that window), kills it with SIGKILL, and adds new posts to the feeds. At the end a last clean
run drains everything. Then: every post is stored exactly once, every flag has its outbox row,
and every alert reached Slack at least once and at most twice. tests/test_crash.py runs a short
version of it in the suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from monitor.feedserver import FeedServer

from feeds import rss
from servers import slack_webhook

FEEDS = 6


def post(feed: int, n: int) -> dict[str, str]:
    author = f"customer{feed}x{n}"  # one author per post: every flag opens a case and alerts
    return {
        "title": f"Bouygues Telecom: je vais résilier ({author})",
        "link": f"https://blog{feed}.example/{n}",
        "guid": f"{feed}-{n}",
        "description": "Trois jours sans internet.",
        "dc:creator": author,
    }


def run(runs: int, seed: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    served: dict[int, list[dict[str, str]]] = {feed: [] for feed in range(FEEDS)}
    with FeedServer() as server, slack_webhook() as webhook:

        def publish() -> None:
            for feed in range(FEEDS):
                for _ in range(rng.randint(0, 3)):
                    served[feed].insert(0, post(feed, len(served[feed])))
                server.add(f"/f{feed}", rss(served[feed][:20]), content_type="application/rss+xml")

        publish()
        database = workdir / "crash.db"
        config = workdir / "monitor.yaml"
        config.write_text(
            json.dumps(
                {
                    "database": f"sqlite:///{database}",
                    "brands": [{"name": "Bouygues Telecom"}],
                    "poll_jitter": "1s",
                    "sources": [
                        {"type": "rss", "name": f"feed{f}", "every": "1s", "urls": [server.url(f"/f{f}")]}
                        for f in range(FEEDS)
                    ],
                    "rules": [
                        {
                            "name": "churn",
                            "severity": "high",
                            "when": {"words_any": ["résilier"]},
                            "notify": ["ops"],
                        }
                    ],
                    # A short lease, so alerts claimed by a killed run are sent again within the harness.
                    "channels": {
                        "ops": {"type": "slack", "webhook_url": webhook.url, "lease": "5s", "timeout": "2s"}
                    },
                }
            )
        )
        command = [sys.executable, "-m", "monitor", "--config", str(config), "run"]
        kills = 0
        for _ in range(runs):
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 3.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            publish()
        # The last run is not killed: it drains what is left, then stops cleanly.
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        expected = {p["guid"] for posts in served.values() for p in posts[:20]}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                with sqlite3.connect(database) as db:
                    stored = {row[0] for row in db.execute("SELECT external_id FROM mentions")}
                    pending = db.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0]
            except sqlite3.OperationalError:
                continue  # on a loaded machine every killed run may have died before creating the schema
            if expected <= stored and pending == 0:
                break
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        with sqlite3.connect(database) as db:
            ids = [row[0] for row in db.execute("SELECT external_id FROM mentions")]
            flags = db.execute("SELECT count(*) FROM flags").fetchone()[0]
            unalerted = db.execute(
                "SELECT count(*) FROM flags f WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.flag_id = f.id)"
            ).fetchone()[0]
            outbox = db.execute("SELECT count(*), sum(status = 'sent') FROM outbox").fetchone()
        deliveries = collections.Counter(p["text"] for p in webhook.posts)
    return {
        "runs": runs,
        "kills": kills,
        "posts_in_final_feeds": len(expected),  # the latest 20 of each feed: must all be stored
        "posts_ever_served": sum(len(posts) for posts in served.values()),
        "mentions": len(ids),
        "duplicates": len(ids) - len(set(ids)),
        "missing": len(expected - set(ids)),
        "flags": flags,
        "flags_without_outbox": unalerted,
        "outbox_rows": outbox[0],
        "outbox_sent": outbox[1] or 0,
        "alerts_delivered_once": sum(1 for n in deliveries.values() if n == 1),
        "alerts_delivered_twice": sum(1 for n in deliveries.values() if n == 2),
        "alerts_delivered_more": sum(1 for n in deliveries.values() if n > 2),
        "alerts_distinct": len(deliveries),
    }


def check(result: dict[str, Any]) -> list[str]:
    problems = []
    if result["missing"]:
        problems.append(f"{result['missing']} posts lost")
    if result["duplicates"]:
        problems.append(f"{result['duplicates']} posts stored twice")
    if result["flags"] != result["mentions"]:
        problems.append(f"{result['mentions'] - result['flags']} posts without their flag")
    if result["flags_without_outbox"]:
        problems.append(f"{result['flags_without_outbox']} flags without outbox rows")
    if result["outbox_sent"] != result["outbox_rows"]:
        problems.append(f"{result['outbox_rows'] - result['outbox_sent']} alerts never sent")
    if result["alerts_distinct"] != result["outbox_rows"]:
        problems.append(
            f"{result['alerts_distinct']} distinct alerts reached Slack for {result['outbox_rows']} rows"
        )
    if result["alerts_delivered_more"]:
        problems.append(f"{result['alerts_delivered_more']} alerts sent more than twice")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.runs, args.seed, Path(tmp))
    print(json.dumps(result, indent=2))
    problems = check(result)
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
