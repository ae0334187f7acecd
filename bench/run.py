"""Benchmarks: the ingest path against baselines measured in the same run.

    python bench/run.py [--quick] [--json]

Numbers are reported as ratios to a baseline run on the same machine in the same process, because
these machines are shared and noisy. Inputs: real French telecom tweets from ../shared/data when
present (seeded sample), else seeded synthetic text.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.config import settings_from_dict
from monitor.mention import Mention
from monitor.pipeline import Pipeline
from monitor.storage.db import Database
from monitor.storage.queries import MENTION_COLUMNS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fr-telecom-tweets" / "unlabelled.csv"
BATCH = 100  # what a feed page or an X search page yields


def texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    if SHARED.exists():
        with SHARED.open(encoding="utf-8") as handle:
            pool = [row["text"] for row in csv.DictReader(handle)]
    else:
        words = [
            "réseau",
            "panne",
            "fibre",
            "box",
            "client",
            "service",
            "facture",
            "résilier",
            "merci",
            "appel",
            "débit",
            "mobile",
        ]
        pool = [" ".join(rng.choice(words) for _ in range(18)) for _ in range(2000)]
    return [f"Freebox {rng.choice(pool)}" for _ in range(count)]


def mentions(corpus: list[str], prefix: str) -> list[Mention]:
    return [
        Mention(source="bench", external_id=f"{prefix}{i}", text=text, author_id=f"x:{i % 500}")
        for i, text in enumerate(corpus)
    ]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What is alive now (the model, the caches, what earlier benchmarks left) is left out of
    garbage collections, as the daemon does with `gc.freeze()` after start-up."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _raw_insert(url: str, rows: list[tuple[object, ...]]) -> float:
    """Seconds to insert `rows` into the mentions table with the driver's executemany, in batches."""
    columns = ", ".join(MENTION_COLUMNS)
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.split("///", 1)[1])
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        statement = f"INSERT INTO mentions ({columns}) VALUES ({', '.join('?' for _ in MENTION_COLUMNS)})"

        def run() -> None:
            for start in range(0, len(rows), BATCH):
                with connection:
                    connection.executemany(statement, rows[start : start + BATCH])

        seconds = timed(run)
        connection.close()
        return seconds
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        statement = f"INSERT INTO mentions ({columns}) VALUES ({', '.join('%s' for _ in MENTION_COLUMNS)})"

        def run_pg() -> None:
            for start in range(0, len(rows), BATCH):
                with pg.transaction(), pg.cursor() as cursor:
                    cursor.executemany(statement, rows[start : start + BATCH])

        return timed(run_pg)


def ingest_results(name: str, url: str, count: int) -> list[dict[str, object]]:
    """The whole ingest path into `url` vs analysis alone and a raw executemany of the same rows."""
    from monitor.analysis.enrich import Analyzer

    corpus = texts(count)
    settings = settings_from_dict(
        {
            "database": url,
            "brands": [{"name": "Free", "aliases": ["Freebox", "Free Mobile"]}],
            "embeddings": False,  # the light model (see enrich-ml)
        }
    )
    db = Database(settings.database)
    pipeline = Pipeline(settings)
    batches = mentions(corpus, "p")
    now = datetime.now(UTC)
    # Both sides measured warm, as a running daemon is: the model remembers the character
    # n-grams of words it has seen, and whichever side ran first would pay for the other.
    warm = Analyzer.for_settings(settings)
    for start in range(0, count, BATCH):
        warm(mentions(corpus[start : start + BATCH], "w"))

    def ingest() -> None:
        for start in range(0, count, BATCH):
            # Batches arrive over time, as they do from collectors: each is collected a little
            # after the one before (one `now` for all would pile every row on one index key).
            at = now + timedelta(milliseconds=start)
            with db.session() as session:
                pipeline.ingest(session, batches[start : start + BATCH], source="bench", stream="s", now=at)

    with frozen_heap():
        ingest_seconds = timed(ingest)
    db.dispose()
    # Floor: the analysis alone on the same texts (the ingest path runs it on every new mention).
    analyzer = Analyzer.for_settings(settings)
    fresh = mentions(corpus, "a")
    analysis_seconds = timed(lambda: [analyzer(fresh[s : s + BATCH]) for s in range(0, count, BATCH)])
    # Storage limit: a raw executemany of the same rows into the same table.
    collected = now.isoformat(sep=" ") if url.startswith("sqlite") else now
    raw_rows = [
        tuple(
            {"brand": "Free", "collected_at": collected}.get(column, getattr(m, column))
            for column in MENTION_COLUMNS
        )
        for m in mentions(corpus, "r")
    ]
    raw_seconds = _raw_insert(url, raw_rows)
    rate, analysis_rate, raw_rate = count / ingest_seconds, count / analysis_seconds, count / raw_seconds
    where = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    return [
        {
            "name": name,
            "value": round(rate),
            "unit": "mentions/s",
            "baseline": round(analysis_rate),
            "ratio": round(rate / analysis_rate, 3),
            "target": 0.5,
            "ok": rate / analysis_rate >= 0.5 and rate >= 3000,
            "note": f"{count} mentions in batches of {BATCH} into {where}, default rule pack; baseline = the "
            f"analysis alone on the same texts; target: ratio >= 0.5 and >= 3,000/s; "
            f"storage limit (raw executemany, same rows) {raw_rate:,.0f} rows/s, ratio {rate / raw_rate:.3f}",
        }
    ]


def bench_ingest(count: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        return ingest_results("ingest", f"sqlite:///{tmp}/ingest.db", count)


def bench_postgres(count: int) -> list[dict[str, object]]:
    """The same ingest on PostgreSQL (MONITOR_TEST_POSTGRES_URL), in a database made for the run."""
    import os

    import psycopg
    from sqlalchemy.engine import make_url

    server = os.environ.get("MONITOR_TEST_POSTGRES_URL")
    if not server:
        return []
    admin = make_url(server).set(drivername="postgresql")
    name = f"monitor_bench_{os.getpid()}"
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        return ingest_results(
            "postgres", make_url(server).set(database=name).render_as_string(hide_password=False), count
        )
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def mixed_texts(count: int, seed: int = 11) -> list[str]:
    """Tweet-sized French and English texts (real ones from ../shared/data when present)."""
    rng = random.Random(seed)
    pool: list[str] = []
    for name, column in (("fr-telecom-tweets/unlabelled.csv", "text"), ("complaints-en/train.csv", "text")):
        path = SHARED.parents[1] / name
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                pool.extend(row[column] for row in csv.DictReader(handle))
    if not pool:
        pool = texts(2000, seed)
    return [rng.choice(pool) for _ in range(count)]


def bench_enrich(count: int) -> list[dict[str, object]]:
    """Full enrichment (language, sentiment, complaint, churn) vs VADER alone, same texts."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from monitor.analysis.enrich import Analyzer
    from monitor.analysis.model import load_model

    load_model.cache_clear()  # measure a real load, not the process's cached model
    started = time.perf_counter()
    load_model()
    load_seconds = time.perf_counter() - started
    corpus = mixed_texts(count)
    analyzer = Analyzer(("fr", "en"), embeddings=False)  # the light model; `enrich-ml` adds the encoder
    analyzer([Mention(source="warm", external_id="0", text=corpus[0])])
    batches = [
        [Mention(source="bench", external_id=str(i), text=t) for i, t in enumerate(corpus[s : s + BATCH], s)]
        for s in range(0, count, BATCH)
    ]
    enrich_seconds = timed(lambda: [analyzer(batch) for batch in batches])
    vader = SentimentIntensityAnalyzer()
    vader_seconds = timed(lambda: [vader.polarity_scores(t) for t in corpus])
    enrich_rate, vader_rate = count / enrich_seconds, count / vader_seconds
    return [
        {
            "name": "enrich",
            "value": round(enrich_rate),
            "unit": "mentions/s",
            "baseline": round(vader_rate),
            "ratio": round(enrich_rate / vader_rate, 3),
            "target": 5000,
            "ok": enrich_rate >= 5000,
            "note": f"{count} FR/EN tweets, batches of {BATCH}; baseline = VADER alone on the same texts",
        },
        {
            "name": "model-load",
            "value": round(load_seconds, 3),
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "target": 1.0,
            "ok": load_seconds < 1.0,
            "note": "loading the packaged detection model file",
        },
    ]


def bench_enrich_ml(count: int) -> list[dict[str, object]]:
    """English posts through the analysis with the sentence encoder (monitor[ml]) vs without it."""
    from monitor.analysis import embeddings
    from monitor.analysis.enrich import Analyzer

    if not embeddings.available():
        return []
    with (SHARED.parents[1] / "complaints-en" / "train.csv").open(encoding="utf-8") as handle:
        corpus = [row["text"] for row in csv.DictReader(handle)][:count]
    rates = {}
    for use in (False, True):
        analyzer = Analyzer(("fr", "en"), embeddings=use)
        analyzer([Mention(source="warm", external_id="w", text="warm up @x my order never came", lang="en")])
        batches = [
            [
                Mention(source="b", external_id=str(i), text=t, lang="en")
                for i, t in enumerate(corpus[s : s + BATCH], s)
            ]
            for s in range(0, len(corpus), BATCH)
        ]
        rates[use] = len(corpus) / timed(
            lambda analyzer=analyzer, batches=batches: [analyzer(b) for b in batches]
        )
    return [
        {
            "name": "enrich-ml",
            "value": round(rates[True]),
            "unit": "mentions/s",
            "baseline": round(rates[False]),
            "ratio": round(rates[True] / rates[False], 3),
            "target": None,
            "ok": None,
            "note": f"{len(corpus)} English complaint-set tweets with the sentence encoder (only scores in "
            f"{embeddings.BAND} are encoded); baseline = the light model alone on the same texts",
        }
    ]


REPORT_RULES = (("complaint", "medium"), ("churn", "high"), ("outage", "critical"), ("influencer", "low"))


def report_database(path: str, count: int, now: datetime, seed: int = 13) -> None:
    """A history of `count` mentions over a year (2% flagged, one case per flagged author) in SQLite."""
    Database(f"sqlite:///{path}").dispose()  # the schema, through the migrations
    rng = random.Random(seed)
    pool = texts(2000, seed)
    brands, sources = ("Free", "Orange", "SFR"), ("rss", "twitter", "forum")

    def stamp(moment: datetime) -> str:  # SQLAlchemy's SQLite storage format, naive UTC
        return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    mention_rows, flag_rows, case_rows = [], [], []
    statuses = ("new", "contacted", "resolved", "resolved", "dismissed")
    for i in range(count):
        collected = now - timedelta(seconds=rng.randrange(365 * 86400))
        published = None if i % 20 == 0 else collected - timedelta(seconds=rng.randrange(3600))
        sentiment = None if i % 25 == 0 else round(rng.uniform(-1, 1), 3)
        brand, author = brands[i % 3], f"a{rng.randrange(count // 4 + 1)}"
        text = rng.choice(pool)
        mention_rows.append(
            (
                *(sources[i % 3], f"m{i}", f"https://example.org/{i}", None, text, author, author, None),
                *(rng.randrange(10_000), 0, "fr", published and stamp(published), stamp(collected)),
                *(None, brand, sentiment, None, None),
            )
        )
        if i % 50 == 0:  # flagged: a case of its own, in some state of the workflow
            rule, severity = REPORT_RULES[i // 50 % len(REPORT_RULES)]
            case_id = len(case_rows) + 1
            status = statuses[case_id % len(statuses)]
            contact = collected + timedelta(hours=rng.uniform(0.1, 48)) if status != "new" else None
            resolved = contact + timedelta(hours=rng.uniform(1, 96)) if status == "resolved" else None
            case_rows.append(
                (
                    *(
                        brand,
                        f"c{case_id}",
                        author,
                        status,
                        severity,
                        1.0,
                        stamp(collected),
                        stamp(collected),
                    ),
                    *(contact and stamp(contact), resolved and stamp(resolved)),
                )
            )
            explanation = json.dumps({"rule": rule, "description": None, "matched": ["panne"]})
            flag_rows.append((i + 1, case_id, rule, severity, rng.random(), explanation, stamp(collected)))
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            f"INSERT INTO mentions ({', '.join(MENTION_COLUMNS)}) VALUES ({', '.join('?' for _ in MENTION_COLUMNS)})",
            mention_rows,
        )
        connection.executemany(
            "INSERT INTO cases (brand, author_key, author_name, status, severity, priority, opened_at,"
            " updated_at, first_contact_at, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            case_rows,
        )
        connection.executemany(
            "INSERT INTO flags (mention_id, case_id, rule, severity, priority, explanation, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            flag_rows,
        )
    connection.execute("ANALYZE")
    connection.close()


def bench_report(count: int) -> list[dict[str, object]]:
    """`monitor report` and `monitor cases list` as a user runs them (table output, default filters),
    in-process (interpreter start-up excluded), on `count` stored mentions."""
    import contextlib
    import io

    from monitor.cli import main as cli

    now = datetime.now(UTC)
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/report.db"
        report_database(path, count, now)
        config = Path(tmp) / "monitor.yaml"
        config.write_text(json.dumps({"database": f"sqlite:///{path}", "brands": [{"name": "Free"}]}))

        def command(*argv: str) -> Callable[[], None]:
            def run() -> None:
                with contextlib.redirect_stdout(io.StringIO()) as out:
                    if cli(["--config", str(config), *argv]) != 0:
                        raise RuntimeError(f"monitor {' '.join(argv)} failed")
                if "(more exist" not in out.getvalue():
                    raise RuntimeError(f"monitor {' '.join(argv)} did not list the first 100 rows")

            return run

        # Baseline: one raw pass over the mentions table (what any unindexed aggregate costs).
        connection = sqlite3.connect(path)
        baseline = sorted(
            timed(lambda: connection.execute("SELECT count(*), sum(sentiment) FROM mentions").fetchall())
            for _ in range(3)
        )[1]
        connection.close()
        for name, argv in (("report", ("report",)), ("cases-list", ("cases", "list"))):
            run = command(*argv)
            run()  # warm: imports, the first connection
            seconds = sorted(timed(run) for _ in range(3))[1]  # median of 3
            value, base = round(seconds, 4), round(baseline, 4)
            results.append(
                {
                    "name": name,
                    "value": value,
                    "unit": "s",
                    "baseline": base,
                    "ratio": round(value / base, 3) if base else None,
                    "target": 1.0,
                    "ok": seconds < 1.0,
                    "note": f"`monitor {' '.join(argv)}` (table: summary and/or the first 100 rows), default filters, "
                    f"{count} mentions, {count // 50} flags and cases in SQLite; median of 3, in-process; "
                    "baseline = one raw scan of the mentions table",
                }
            )
    return results


def bench_rules_scaling(count: int) -> list[dict[str, object]]:
    """Per-mention rule evaluation with 10 vs 10,000 keywords: one automaton, so cost barely grows."""
    from monitor.config import Rule
    from monitor.rules.engine import RuleSet

    rng = random.Random(17)
    real = [
        "panne",
        "résilier",
        "fibre",
        "réseau",
        "facture",
        "remboursement",
        "débit",
        "box",
        "appel",
        "merci",
    ]
    letters = "abcdefghijklmnopqrstuvwxyz"
    synthetic = [
        "".join(rng.choice(letters) for _ in range(rng.randint(5, 12))) for _ in range(10_000 - len(real))
    ]

    def ruleset(keywords: list[str]) -> RuleSet:  # 10 rules, the keywords dealt out among them
        return RuleSet(
            tuple(
                Rule.model_validate({"name": f"r{i}", "when": {"words_any": keywords[i::10]}})
                for i in range(10)
            )
        )

    small, large = ruleset(real), ruleset(real + synthetic)
    batch = [
        Mention(source="bench", external_id=str(i), text=t, brand="Free", lang="fr", sentiment=0.0)
        for i, t in enumerate(mixed_texts(count))
    ]
    for rules in (small, large):  # build the automata outside the timing
        rules.evaluate(batch[0])
    # Alternated, best of 3 each: a burst of load on a shared machine then slows both sides of the
    # ratio, not only one.
    small_runs: list[float] = []
    large_runs: list[float] = []
    with frozen_heap():
        for _ in range(3):
            small_runs.append(timed(lambda: [small.evaluate(m) for m in batch]))
            large_runs.append(timed(lambda: [large.evaluate(m) for m in batch]))
    small_seconds, large_seconds = min(small_runs), min(large_runs)
    value, base = large_seconds / count * 1e6, small_seconds / count * 1e6
    ratio = value / base
    return [
        {
            "name": "rules-scaling",
            "value": round(value, 2),
            "unit": "us/mention",
            "baseline": round(base, 2),
            "ratio": round(ratio, 3),
            "target": 2.0,
            "ok": ratio <= 2.0,
            "note": f"10 words_any rules over {count} FR/EN tweets, 10,000 keywords (10 real + synthetic words)"
            " vs the 10 real ones; best of 3; target is on the ratio",
        },
        rules_200(batch, synthetic),
    ]


def rules_200(batch: list[Mention], words: list[str]) -> dict[str, object]:
    """200 rules of every common shape, analysis scores precomputed: mentions/s on one core."""
    from monitor.config import Rule
    from monitor.rules.engine import RuleSet

    rng = random.Random(23)
    for mention in batch:  # as the analysis scores real posts: mostly low, a tail of complaints
        mention.complaint_score = rng.random() ** 3
        mention.sentiment = max(-1.0, min(1.0, rng.gauss(0.0, 0.35)))
        mention.churn = False
    shapes = [
        lambda i: {"words_any": [words[i], words[i + 1], "panne"]},
        lambda i: {"all": [{"phrase": f"{words[i]} {words[i + 2]}"}, {"not": {"author_is_brand": True}}]},
        lambda i: {"all": [{"complaint_score_at_least": 0.5 + (i % 40) / 100}, {"lang_in": ["fr", "en"]}]},
        lambda i: {"any": [{"sentiment_at_most": -0.5}, {"words_all": [words[i], "réseau"]}]},
    ]
    rules = RuleSet(
        tuple(Rule.model_validate({"name": f"r{i}", "when": shapes[i % 4](i)}) for i in range(200))
    )
    rules.evaluate(batch[0])
    with frozen_heap():
        seconds = min(timed(lambda: [rules.evaluate(m) for m in batch]) for _ in range(3))
    rate = len(batch) / seconds
    return {
        "name": "rules-200",
        "value": round(rate),
        "unit": "mentions/s",
        "baseline": None,
        "ratio": None,
        "target": 20000,
        "ok": rate >= 20000,
        "note": f"200 rules (keywords, phrases, scores, combinators) over {len(batch)} tweets; best of 3",
    }


FEED_BRANDS = [{"name": "Acme"}]


def feed_bodies(count: int) -> list[bytes]:
    """`count` RSS feeds of 20 entries of real FR/EN tweet text; about 5% name the brand.

    The brand (`FEED_BRANDS`) is a name the tweets never use: the real ones name French operators
    (Free in about a fifth of them), which would make nearly every entry a mention.
    """
    rng = random.Random(29)
    corpus = mixed_texts(count * 20)
    bodies: list[bytes] = []
    for n in range(count):
        items = []
        for k in range(20):
            text = corpus[n * 20 + k].replace("&", "&amp;").replace("<", "&lt;")
            brand = "Acme " if rng.random() < 0.05 else ""  # a few posts name the brand
            items.append(
                f"<item><title>{brand}post {n}-{k}</title><link>https://blog{n}.example/{k}</link>"
                f"<guid>{n}-{k}</guid><description>{text}</description></item>"
            )
        bodies.append(
            f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>blog {n}</title>'
            f"{''.join(items)}</channel></rss>".encode()
        )
    return bodies


@contextlib.contextmanager
def served_feeds(count: int) -> Iterator[list[str]]:
    """`feed_bodies(count)` served over real sockets by a FeedServer in another process, as feeds
    are served by other machines: its request handling must not share the measured process's
    interpreter lock (it would slow the baseline and the collector alike, and hide both)."""
    import subprocess

    child = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import run; "
        "from monitor.feedserver import FeedServer\n"
        "with FeedServer() as server:\n"
        "    urls = [server.add(f'/feed/{n}', body, content_type='application/rss+xml')"
        " for n, body in enumerate(run.feed_bodies(int(sys.argv[2])))]\n"
        "    print(json.dumps(urls), flush=True)\n"
        "    sys.stdin.read()\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", child, str(Path(__file__).parent), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield json.loads(server.stdout.readline())
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


def bench_feeds(count: int) -> list[dict[str, object]]:
    """N feeds of 20 entries on a local server: a cold cycle, then an unchanged one (all 304)."""
    import io

    import feedparser

    from monitor.collector import Collector

    bodies = feed_bodies(count)
    with tempfile.TemporaryDirectory() as tmp, served_feeds(count) as urls:
        settings = settings_from_dict(
            {
                "database": f"sqlite:///{tmp}/feeds.db",
                "brands": FEED_BRANDS,
                "sources": [{"type": "rss", "name": "blogs", "urls": urls}],
                "embeddings": False,  # the light model, as `ingest` (enrich-ml measures the encoder)
            }
        )
        db = Database(settings.database)
        collector = Collector(settings, db)
        with frozen_heap():
            cold = timed(collector.collect)
            unchanged = timed(collector.collect)
        collector.close()
        db.dispose()
        sequential = timed(lambda: [feedparser.parse(url) for url in urls])
    parse_only = timed(lambda: [feedparser.parse(io.BytesIO(body)) for body in bodies])
    return [
        {
            "name": "feeds-cold",
            "value": round(cold, 3),
            "unit": "s",
            "baseline": round(sequential, 3),
            "ratio": round(cold / sequential, 3),
            "target": 0.333,
            "ok": cold / sequential <= 1 / 3,
            "note": f"{count} feeds x 20 entries, fetch+parse+ingest; baseline = sequential feedparser.parse(url); "
            f"target: at least 3x faster (ratio <= 0.333); parse-only floor {count / parse_only:.0f} feeds/s",
        },
        {
            "name": "feeds-unchanged",
            "value": round(unchanged, 3),
            "unit": "s",
            "baseline": round(cold, 3),
            "ratio": round(unchanged / cold, 3),
            "target": 0.1,
            "ok": unchanged / cold <= 0.1,
            "note": "the same cycle again: every feed answers 304; target on the ratio to the cold cycle",
        },
    ]


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc: Linux only")


def bench_memory(count: int, cycles: int, *, ml: bool = False) -> list[dict[str, object]]:
    """Peak RSS of `monitor run` over `cycles` polls of `count` feeds, vs the same process idle.

    `ml=False` is the default install (`embeddings: false` runs exactly what an install without
    `monitor[ml]` runs); `ml=True` adds the sentence encoder, when it is installed.
    """
    if ml:
        from monitor.analysis import embeddings

        if not embeddings.available():
            return []
    import signal
    import subprocess
    from collections import Counter

    from monitor.feedserver import FeedServer

    bodies = feed_bodies(count)
    with tempfile.TemporaryDirectory() as tmp, FeedServer() as server:
        urls = [
            server.add(f"/feed/{n}", body, content_type="application/rss+xml")
            for n, body in enumerate(bodies)
        ]

        def run(config: dict[str, object], until: Callable[[], bool]) -> float:
            path = Path(tmp) / "monitor.yaml"
            path.write_text(json.dumps(config))
            command = [sys.executable, "-m", "monitor", "--config", str(path), "run"]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 900
                while not until() and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                if process.poll() is not None or not until():
                    raise RuntimeError(f"monitor run stopped or stalled (exit {process.poll()})")
                return _peak_rss_mb(process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)

        base = {
            "database": f"sqlite:///{tmp}/memory.db",
            "brands": FEED_BRANDS,
            "embeddings": ml,
        }
        # Baseline: the same daemon with nothing to poll, after start-up (model loaded, schema made).
        started = time.monotonic()
        idle = run({**base, "sources": []}, lambda: time.monotonic() - started > 3)
        Path(f"{tmp}/memory.db").unlink(missing_ok=True)

        def polled() -> bool:
            hits = Counter(hit.path for hit in list(server.hits))
            return len(hits) == count and min(hits.values()) >= cycles

        source = {"type": "rss", "name": "blogs", "every": "1s", "urls": urls}
        peak = run({**base, "poll_jitter": "1s", "sources": [source]}, polled)
    what = "with the monitor[ml] sentence encoder" if ml else "default install and settings"
    return [
        {
            "name": "memory-ml" if ml else "memory",
            "value": round(peak, 1),
            "unit": "MB",
            "baseline": round(idle, 1),
            "ratio": round(peak / idle, 3),
            "target": None if ml else 200,
            "ok": None if ml else peak <= 200,
            "note": f"peak RSS of monitor run over {cycles} polls of {count} feeds x 20 entries (SQLite), {what}; "
            "baseline = the same daemon idle with no source" + ("" if ml else "; target: <= 200 MB"),
        }
    ]


def _size(quick: bool) -> int:
    return 2_000 if quick else 20_000


def _feeds(quick: bool) -> int:
    return 50 if quick else 1000


# Each group runs one or more rows; `--only` picks groups by these names.
GROUPS: dict[str, Callable[[bool], list[dict[str, object]]]] = {
    "enrich": lambda quick: bench_enrich(_size(quick)),
    "enrich-ml": lambda quick: bench_enrich_ml(200 if quick else 1000),
    "ingest": lambda quick: bench_ingest(_size(quick)),
    "feeds": lambda quick: bench_feeds(_feeds(quick)),
    "report": lambda quick: bench_report(20_000 if quick else 1_000_000),
    "memory": lambda quick: bench_memory(_feeds(quick), 3 if quick else 10),
    "memory-ml": lambda quick: bench_memory(_feeds(quick), 3 if quick else 10, ml=True),
    "postgres": lambda quick: bench_postgres(_size(quick)),
    "rules-scaling": lambda quick: bench_rules_scaling(_size(quick)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (seconds)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--only",
        metavar="GROUPS",
        help=f"comma-separated groups to run ({', '.join(GROUPS)}); default all",
    )
    args = parser.parse_args(argv)
    chosen = list(GROUPS) if not args.only else [g.strip() for g in args.only.split(",")]
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    results: list[dict[str, object]] = []
    for group in chosen:
        results += GROUPS[group](args.quick)
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            baseline = (
                ""
                if result["baseline"] is None
                else f"baseline {result['baseline']:>8}  ratio {result['ratio']:.3f}"
            )
            target = (
                ""
                if result["target"] is None
                else f"target {result['target']} {'ok' if result['ok'] else 'MISSED'}"
            )
            print(
                f"{result['name']:<11} {result['value']:>9} {result['unit']:<11} {baseline:<33} {target:<18} ({result['note']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
