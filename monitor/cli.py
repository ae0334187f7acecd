"""The `monitor` command. Thin: each command parses options, calls one library function, prints."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click

from monitor import __version__
from monitor.confbase import parse_duration
from monitor.config import Settings, config_path, load_config
from monitor.errors import ConfigError, MonitorError
from monitor.report import FORMATS, MENTION_TABLE, REPORT_TABLE, SOURCE_TABLE, render, visible_text, with_why

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command may need, built lazily so `init` and `--help` need no config."""

    def __init__(self, config: str | None, database: str | None) -> None:
        self.config_option = config
        self.database_option = database

    @cached_property
    def settings(self) -> Settings:
        settings = load_config(self.config_option)
        if self.database_option:
            settings = settings.model_copy(update={"database": self.database_option})
        from monitor import logs

        logs.redact_secrets(logs.secret_values(settings))
        return settings

    @cached_property
    def db(self) -> Any:
        from monitor.storage.db import Database

        return Database(self.settings.database)


pass_ctx = click.make_pass_decorator(Context)


def format_option(formats: Sequence[str] = FORMATS) -> Callable[[F], F]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(formats)),
        default="table",
        show_default=True,
        help="Output format.",
    )


SHOWN = 100  # rows a person reads in a terminal or a page: the most urgent, or the newest


def limit_option() -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=None,
        help=f"At most this many rows (0: all). Default: {SHOWN} in table and html, all in json and csv.",
    )


def shown_limit(limit: int | None, fmt: str) -> int | None:
    """The row limit for a listing: a person gets the first SHOWN rows, a script gets everything."""
    if limit is not None:
        return limit or None
    return SHOWN if fmt in ("table", "html") else None


def cut(rows: list[dict[str, Any]], limit: int | None, noun: str) -> tuple[list[dict[str, Any]], str]:
    """`rows` (fetched with one more than `limit`) cut to `limit`, and a title saying whether more exist."""
    if limit is not None and len(rows) > limit:
        return rows[:limit], f"the first {limit} {noun} (more exist: --limit N, or --limit 0 for all)"
    return rows, f"{len(rows)} {noun}"


def _one_more(limit: int | None) -> int | None:
    return None if limit is None else limit + 1


def parse_since(value: str | None) -> datetime | None:
    """`7d` (a duration back from now) or an ISO date/time."""
    if not value:
        return None
    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a duration like 7d or a date like 2026-11-01, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="monitor")
@click.option(
    "--config", "-c", metavar="PATH", help="Config file (default: $MONITOR_CONFIG, else ./monitor.yaml)."
)
@click.option("--database", metavar="URL", help="Override the config's database URL.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
)
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, database: str | None, log_level: str, log_format: str
) -> None:
    """Brand-mention monitor: collect blog feeds and X mentions, flag unhappy customers, alert support."""
    from monitor import logs

    logs.configure(log_level, log_format)
    ctx.obj = Context(config, database)


@cli.command()
@click.option(
    "--path", "target", default=None, metavar="PATH", help="Where to write (default: the config path)."
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_ctx
def init(ctx: Context, target: str | None, force: bool) -> None:
    """Write a commented starter config."""
    from monitor.starter import write_starter_config

    path = write_starter_config(Path(target) if target else config_path(ctx.config_option), force=force)
    click.echo(f"wrote {path}; edit the brands and sources, then run `monitor collect --once`")


@cli.command()
@click.option("--once", is_flag=True, default=True, help="Poll every enabled source once (the default).")
@click.option("--source", "only", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@pass_ctx
def collect(ctx: Context, once: bool, only: tuple[str, ...]) -> None:
    """Poll the sources once and ingest what they return. Exit 1 if any stream failed."""
    from monitor.collector import Collector

    settings = ctx.settings
    known = {s.name for s in settings.sources}
    for name in only:
        if name not in known:
            raise ConfigError(f"unknown source {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    collector = Collector(settings, ctx.db)
    try:
        report = collector.collect(only or None)
    finally:
        collector.close()
    totals = report.totals
    click.echo(
        f"collected {totals.stored} new mentions ({totals.received} items, {totals.duplicates} already stored, "
        f"{totals.unmatched} not about a brand); {totals.flags} flags, {totals.cases_opened} cases opened"
    )
    for name, reason in report.skipped.items():
        click.echo(f"skipped {name}: {reason}")
    for line in report.errors:
        click.echo(visible_text(f"error {line.source} [{line.stream}]: {line.shown_error}"), err=True)
    if report.errors:
        sys.exit(1)


@cli.command()
@click.option("--brand")
@click.option("--source")
@click.option("--since", help="A duration (7d) or a date (2026-11-01).")
@limit_option()
@format_option()
@pass_ctx
def mentions(
    ctx: Context, brand: str | None, source: str | None, since: str | None, limit: int | None, fmt: str
) -> None:
    """List stored mentions, newest first."""
    from monitor.storage.queries import Filters, list_mentions

    limit = shown_limit(limit, fmt)
    filters = Filters(brand=brand, source=source, since=parse_since(since), limit=_one_more(limit))
    with ctx.db.session() as session:
        rows, title = cut(list_mentions(session, filters), limit, "mentions")
    render(rows, fmt, table_columns=MENTION_TABLE, title=title, out=sys.stdout)


@cli.command()
@click.option("--brand")
@click.option("--source")
@click.option("--since", help="A duration (7d) or a date (2026-11-01).")
@click.option("--severity", type=click.Choice(["low", "medium", "high", "critical"]))
@click.option("--status", type=click.Choice(["new", "contacted", "resolved", "dismissed"]))
@click.option("--rule")
@limit_option()
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write to this file.")
@format_option((*FORMATS, "html"))
@pass_ctx
def report(
    ctx: Context,
    brand: str | None,
    source: str | None,
    since: str | None,
    severity: str | None,
    status: str | None,
    rule: str | None,
    limit: int | None,
    output: str | None,
    fmt: str,
) -> None:
    """Flagged posts, most urgent first, with why each was flagged, and a summary.

    `--format html` writes one self-contained page with charts (mentions per day by sentiment,
    flags per day, open-case aging).
    """
    from monitor.report import render_summary
    from monitor.report_html import render_html
    from monitor.storage.queries import Filters, flagged_posts
    from monitor.summary import build_summary

    limit = shown_limit(limit, fmt)
    filters = Filters(
        brand=brand,
        source=source,
        since=parse_since(since),
        severity=severity,
        status=status,
        rule=rule,
        limit=_one_more(limit),
    )
    now = datetime.now(UTC)
    with ctx.db.session() as session:
        rows, title = cut(flagged_posts(session, filters), limit, "flagged posts")
        rows = with_why(rows)
        summary = (
            build_summary(session, filters, now, daily=fmt == "html") if fmt in ("table", "html") else None
        )
    if fmt in ("json", "csv"):
        for row in rows:
            row.pop("why")

    def write(out: Any) -> None:
        if fmt == "html":
            assert summary is not None
            out.write(render_html(summary, rows, title="monitor report", generated_at=now))
            return
        if summary is not None:
            render_summary(summary, out=out)
        render(rows, fmt, table_columns=REPORT_TABLE, title=title, out=out)

    if output:
        with open(output, "w", encoding="utf-8", newline="") as out:
            write(out)
        click.echo(f"wrote {output}")
    else:
        write(sys.stdout)


@cli.command()
@format_option()
@pass_ctx
def sources(ctx: Context, fmt: str) -> None:
    """Each source and stream: last success, last error, next poll."""
    from monitor.status import source_health

    rows = source_health(ctx.settings, ctx.db)
    if fmt == "table":  # people see why a source does not run where its error would be
        rows = [
            {
                **row,
                "last_error": row["disabled_reason"] or row["parked_reason"] or row["last_error"],
                "reads": _reads_cell(row),
            }
            for row in rows
        ]
    render(rows, fmt, table_columns=SOURCE_TABLE, title="sources", out=sys.stdout)


def _reads_cell(row: dict[str, Any]) -> str:
    if not row.get("reads_this_month") and not row.get("monthly_read_cap"):
        return ""
    cap = f"/{row['monthly_read_cap']}" if row.get("monthly_read_cap") else ""
    return f"{row['reads_this_month']}{cap} (${row['estimated_cost']:.2f})"


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Apply schema migrations (also done automatically on start)."""
    from monitor.storage.db import Database

    database = Database(ctx.settings.database, migrate=False)
    before = database.current_revision()
    database.upgrade()
    after = database.current_revision()
    click.echo(f"database {database.shown_url}: {before or 'empty'} -> {after}")


@cli.group()
def cases() -> None:
    """Work the flagged customers: list, show, assign, contact, resolve, dismiss, reopen."""


CASE_TABLE = ("id", "status", "severity", "brand", "author", "assignee", "flags", "opened_at", "hint")


def _actor(by: str | None) -> str | None:
    return by or os.environ.get("USER") or None


@cases.command("list")
@click.option(
    "--status", multiple=True, type=click.Choice(["new", "contacted", "resolved", "dismissed", "open"])
)
@click.option("--brand")
@click.option("--severity", type=click.Choice(["low", "medium", "high", "critical"]))
@click.option("--assignee")
@click.option("--since", help="Opened after: a duration (7d) or a date (2026-11-01).")
@limit_option()
@format_option()
@pass_ctx
def cases_list(
    ctx: Context,
    status: tuple[str, ...],
    brand: str | None,
    severity: str | None,
    assignee: str | None,
    since: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Cases, most urgent first (default: the open ones)."""
    from monitor.cases import list_cases

    wanted = {s for s in status if s != "open"} | (
        {"new", "contacted"} if "open" in status or not status else set()
    )
    limit = shown_limit(limit, fmt)
    with ctx.db.session() as session:
        rows, title = cut(
            list_cases(
                session,
                statuses=wanted,
                brand=brand,
                severity=severity,
                assignee=assignee,
                since=parse_since(since),
                limit=_one_more(limit),
            ),
            limit,
            "cases",
        )
    render(rows, fmt, table_columns=CASE_TABLE, title=title, out=sys.stdout)


@cases.command("show")
@click.argument("case_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def cases_show(ctx: Context, case_id: int, fmt: str) -> None:
    """One case and its timeline: mentions with scores, flags with why, alerts, notes."""
    from monitor.cases import timeline
    from monitor.report import render_timeline

    with ctx.db.session() as session:
        story = timeline(session, case_id)
    render_timeline(story, fmt, out=sys.stdout)


def _case_action(
    action: str, help_text: str, *, note_option: str | None = "--note", required: bool = False
) -> None:
    """One `monitor cases ACTION ID` command: the workflow moves differ only in name and note."""

    @click.argument("case_id", type=int)
    @click.option("--by", help="Who does it (default: $USER).")
    @pass_ctx
    def command(ctx: Context, case_id: int, by: str | None, **options: Any) -> None:
        from monitor.cases import act

        with ctx.db.session() as session:
            case = act(
                session,
                case_id,
                action,
                datetime.now(UTC),
                actor=_actor(by),
                note=options.get("note") or options.get("reason"),
                channels=ctx.settings.channels,
            )
            status = case.status
        click.echo(f"case #{case_id} is now {status}")

    if note_option:
        name = note_option.lstrip("-")
        command = click.option(
            note_option, name, required=required, help=f"Why ({name}), kept in the timeline."
        )(command)
    cases.command(action, help=help_text)(command)


_case_action("contact", "Record that the customer was contacted (first contact time is kept).")
_case_action("resolve", "Close the case as resolved (channels with notify_resolved get a notice).")
_case_action("dismiss", "Close the case as not needing action.", note_option="--reason", required=True)
_case_action("reopen", "Open a resolved or dismissed case again.", note_option=None)


@cases.command("assign")
@click.argument("case_id", type=int)
@click.option("--to", "to", required=True, help="Who takes the case.")
@click.option("--by", help="Who assigns it (default: $USER).")
@pass_ctx
def cases_assign(ctx: Context, case_id: int, to: str, by: str | None) -> None:
    """Give the case to someone."""
    from monitor.cases import assign

    with ctx.db.session() as session:
        assign(session, case_id, to, datetime.now(UTC), actor=_actor(by))
    click.echo(f"case #{case_id} is assigned to {to}")


@cli.group()
def rules() -> None:
    """Check, try and backtest the rules before they go live."""


@rules.command("check")
@pass_ctx
def rules_check(ctx: Context) -> None:
    """Validate the config's rules; exit 2 naming file, rule and field on errors, else summarize."""
    from monitor.confbase import format_duration
    from monitor.rules.trial import describe

    summary = describe(ctx.settings)
    listed = summary["rules"]
    enabled = sum(1 for rule in listed if rule["enabled"])
    if summary["builtin"]:
        click.echo(f"no rules configured: the built-in pack applies ({', '.join(r['name'] for r in listed)})")
    else:
        files = ", ".join([str(config_path(ctx.config_option)), *summary["rules_files"]])
        click.echo(
            f"{len(listed)} rules ok ({enabled} enabled, {len(listed) - enabled} disabled) from {files}; "
            f"{summary['keywords']} distinct words and phrases"
        )
    for rule in listed:
        notes = [f"notify: {', '.join(rule['notify']) or 'none'}"]
        if rule["cooldown"]:
            notes.append(f"cooldown {format_duration(rule['cooldown'])}")
        if rule["brands"]:
            notes.append(f"brands: {', '.join(rule['brands'])}")
        if not rule["enabled"]:
            notes.append("disabled")
        click.echo(f"  {rule['name']} [{rule['severity']}] {'; '.join(notes)}")
    aggregates = summary["aggregates"]
    if aggregates:
        click.echo(f"{len(aggregates)} aggregate rules ok")
        for aggregate in aggregates:
            off = "; disabled" if not aggregate["enabled"] else ""
            click.echo(f"  {aggregate['name']} [{aggregate['severity']}] {aggregate['type']}{off}")


@rules.command("test")
@click.argument("text")
@click.option("--brand", help="The brand the text is about (default: the brand it names, else the first).")
@click.option("--lang", help="Its language code (default: detected).")
@click.option("--source", default="test", show_default=True, help="The source name it comes from.")
@click.option(
    "--author-followers",
    "--followers",
    "followers",
    type=click.IntRange(min=0),
    help="The author's follower count.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def rules_test(
    ctx: Context,
    text: str,
    brand: str | None,
    lang: str | None,
    source: str,
    followers: int | None,
    fmt: str,
) -> None:
    """Analyse TEXT as a new mention and show which rules fire, and why (nothing is stored)."""
    import json

    from monitor.rules.trial import try_text

    result = try_text(
        _settings_or_default(ctx, brand), text, brand=brand, lang=lang, source=source, followers=followers
    )
    if fmt == "json":
        click.echo(json.dumps(result, ensure_ascii=False))
        return

    def score(value: float | None) -> str:
        return "none" if value is None else f"{value:+.2f}"

    click.echo(
        f"brand {result['brand']}, language {result['lang']}, sentiment {score(result['sentiment'])}, "
        f"complaint {score(result['complaint_score'])}, churn {'yes' if result['churn'] else 'no'}"
    )
    rows = [{**fired, "why": "; ".join(fired["matched"])} for fired in result["fired"]]
    if rows:
        render(rows, "table", table_columns=("rule", "severity", "priority", "why"), out=sys.stdout)
    else:
        click.echo("no rule fires")
    if result["not_fired"]:
        click.echo(f"not fired: {', '.join(result['not_fired'])}")
    if result["disabled"]:
        click.echo(f"disabled (not evaluated): {', '.join(result['disabled'])}")
    for note in result["notes"]:
        click.echo(f"note: {note}")


@rules.command("backtest")
@click.option("--since", default="30d", show_default=True, help="A duration (30d) or a date (2026-11-01).")
@click.option("--rule", "rule_name", metavar="NAME", help="Only this rule (disabled rules too).")
@click.option(
    "--examples", type=click.IntRange(min=0), default=3, show_default=True, help="Examples per rule."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def rules_backtest(ctx: Context, since: str, rule_name: str | None, examples: int, fmt: str) -> None:
    """Re-run the rules over stored mentions: what each would flag. Writes and sends nothing."""
    import json

    from monitor.rules.trial import backtest

    start = parse_since(since)
    assert start is not None
    with ctx.db.session() as session:
        result = backtest(session, ctx.settings, start, rule=rule_name, examples=examples)
    if fmt == "json":
        click.echo(
            json.dumps(
                result,
                default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
                ensure_ascii=False,
            )
        )
        return
    title = f"{result['mentions']} mentions collected since {start:%Y-%m-%d %H:%M} UTC"
    columns = ("rule", "severity", "enabled", "would_flag", "new", "existing")
    render(result["rules"], "table", table_columns=columns, title=title, out=sys.stdout)
    for entry in result["rules"]:
        for example in entry["examples"]:
            mark = "already flagged" if example["already_flagged"] else "new"
            click.echo(
                visible_text(
                    f"{entry['rule']} #{example['mention_id']} ({mark}, {example['brand']}, {example['source']}): "
                    f"{example['text']}"
                )
                + visible_text(f"\n    why: {'; '.join(example['matched'])}")
            )


@cli.group()
def alerts() -> None:
    """The alert outbox: what was sent, what waits, what failed."""


@alerts.command("list")
@click.option("--status", type=click.Choice(["pending", "sent", "failed"]))
@limit_option()
@format_option()
@pass_ctx
def alerts_list(ctx: Context, status: str | None, limit: int | None, fmt: str) -> None:
    """Alerts, newest first, with attempts and the last error."""
    from monitor.alerts.outbox import list_alerts

    limit = shown_limit(limit, fmt)
    rows, title = cut(list_alerts(ctx.db, status, _one_more(limit)), limit, "alerts")
    columns = (
        "id",
        "kind",
        "channel",
        "status",
        "attempts",
        "case_id",
        "created_at",
        "next_try_at",
        "last_error",
    )
    render(rows, fmt, table_columns=columns, title=title, out=sys.stdout)


@alerts.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--failed", is_flag=True, help="Retry every failed alert.")
@pass_ctx
def alerts_retry(ctx: Context, ids: tuple[int, ...], failed: bool) -> None:
    """Queue failed alerts (by ID, or all with --failed) for delivery again."""
    from monitor.alerts.outbox import retry

    if not ids and not failed:
        raise click.UsageError("give alert IDs or --failed")
    count = retry(ctx.db, ids, failed=failed)
    click.echo(f"{count} alerts queued for delivery")


@alerts.command("send")
@pass_ctx
def alerts_send(ctx: Context) -> None:
    """Deliver due alerts now (the daemon does this continuously). Exit 1 if any failed."""
    from monitor.alerts.outbox import Delivery, notifiers_for

    notifiers = notifiers_for(ctx.settings.channels)
    report = Delivery(ctx.db, notifiers).run_once()
    click.echo(f"sent {report.sent}, will retry {report.retried}, failed {report.failed}")
    for error in report.errors:
        click.echo(visible_text(f"error: {error}"), err=True)
    if report.errors:
        sys.exit(1)


@cli.command("eval")
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@click.option("--brand", help="Brand to evaluate the texts as mentions of (default: the config's first).")
@click.option(
    "--target",
    type=click.Choice(["flag", "complaint", "churn", "sentiment"]),
    default="flag",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--by-rule", is_flag=True, help="Also count each rule's matches (target flag).")
@click.option(
    "--cv", "folds", type=click.IntRange(min=2), help="Cross-validate the trainable model on LABELS."
)
@pass_ctx
def eval_command(
    ctx: Context, labels: str, brand: str | None, target: str, as_json: bool, by_rule: bool, folds: int | None
) -> None:
    """Score flagging (or one detector) against a labelled CSV: `text,label[,lang]`."""
    import json

    from monitor import evaluation

    settings = _settings_or_default(ctx, brand)
    examples = evaluation.read_examples(Path(labels), target)
    click.echo(f"model: {evaluation.model_description(settings)}", err=as_json)
    if folds:
        result = evaluation.cross_validated(settings, examples, target=target, folds=folds)
    else:
        result = evaluation.evaluate(settings, examples, target=target, brand=brand, by_rule=by_rule)
    if as_json:
        click.echo(json.dumps(result))
        return
    mode = (
        f"{folds}-fold cross-validation of the trainable model"
        if folds
        else "the configured analysis and rules"
    )
    click.echo(f"{target} on {result['n']} examples, {mode}:")
    for key, value in result.items():
        if key != "by_rule":
            click.echo(f"  {key:<10} {value}")
    for rule, counts in (result.get("by_rule") or {}).items():
        click.echo(
            f"  rule {rule}: tp {counts['tp']} fp {counts['fp']} fn {counts['fn']} "
            f"precision {counts['precision']} recall {counts['recall']}"
        )


def _settings_or_default(ctx: Context, brand: str | None) -> Settings:
    """The config when there is one; otherwise the built-in rules for one brand."""
    if ctx.config_option or config_path(None).exists():
        return ctx.settings
    from monitor.config import settings_from_dict

    return settings_from_dict({"brands": [{"name": brand or "the brand"}]}, file="<defaults>")


@cli.group()
def model() -> None:
    """The detection model that ships in the package."""


@model.command("train")
@click.option(
    "--data", "data_dir", default="../shared/data", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--labels",
    default="training/labels/fr-telecom.csv",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The project's French annotations.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Default: the packaged model file.")
def model_train(data_dir: str, labels: str, output: str | None) -> None:
    """Rebuild the detection model from the labelled data (deterministic)."""
    from monitor.analysis.model import bundled_model_path, trainer

    trained = trainer().train(Path(data_dir), Path(labels))
    target = Path(output) if output else bundled_model_path()
    trained.save(target)
    counts = ", ".join(f"{k}: {v}" for k, v in trained.metadata["examples"].items())
    click.echo(f"wrote {target} ({target.stat().st_size // 1024} KiB; trained on {counts})")


@cli.command()
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics on this port.")
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for the metrics server."
)
@pass_ctx
def run(ctx: Context, metrics_port: int | None, metrics_host: str) -> None:
    """Run the daemon: poll sources, deliver alerts, until SIGINT/SIGTERM (SIGHUP reloads the config)."""
    from monitor.daemon import run_forever

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    run_forever(
        ctx.settings,
        ctx.db,
        config_path=config_path(ctx.config_option),
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )


@cli.command()
@format_option()
@pass_ctx
def status(ctx: Context, fmt: str) -> None:
    """Health for scripts and container checks: exit 0 when healthy, 1 otherwise."""
    from monitor.status import health

    report = health(ctx.settings, ctx.settings.database)
    if fmt == "json":
        import json

        click.echo(json.dumps(report, default=str))
    else:
        click.echo(
            f"database: {'reachable' if report['database_ok'] else 'UNREACHABLE: ' + str(report['database_error'])}"
        )
        click.echo(
            f"outbox: {report['outbox_pending']} pending"
            + (
                f", oldest {report['oldest_pending_minutes']:.0f} min"
                if report["oldest_pending_minutes"] is not None
                else ""
            )
        )
        for row in report["sources"]:
            click.echo(
                visible_text(
                    f"source {row['source']} [{row['stream']}]: {row['status']}"
                    + (
                        f" ({row['last_error'] or row['parked_reason'] or row['disabled_reason']})"
                        if row["status"] != "ok"
                        else ""
                    )
                )
            )
        click.echo("healthy" if report["healthy"] else "UNHEALTHY: " + "; ".join(report["problems"]))
    if not report["healthy"]:
        sys.exit(1)


@cli.command()
@format_option()
@pass_ctx
def demo(ctx: Context, fmt: str) -> None:
    """Run the whole pipeline offline on bundled sample posts, then print the report.

    Needs no config; stores into a temporary SQLite database unless --database is given.
    """
    from monitor.demo import run_demo

    run_demo(sys.stdout, database=ctx.database_option, fmt=fmt)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 failure, 2 bad usage or config)."""
    try:
        result = cli.main(args=argv, prog_name="monitor", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        return 2
    except MonitorError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
