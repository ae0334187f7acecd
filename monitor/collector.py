"""One collection cycle: poll each source's streams and feed every batch to `pipeline.ingest`.

A failing stream is recorded on its state (reason, time, count) and the cycle goes on; its
cursor stays where it was, so the next poll retries from the same point.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.errors import AccessRefusedError, SourceError
from monitor.logs import RedactSecrets, secret_values
from monitor.pipeline import IngestResult, Pipeline
from monitor.sources import Batch, Source, StreamRequest, build_source
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.leases import source_lease

log = logging.getLogger(__name__)
GROUP_STREAMS = 64  # clean feed responses stored in one transaction, at most ...
GROUP_MENTIONS = 500  # ... and about this many posts (the analysis's batch sweet spot)
GROUP_UNCHANGED = 1000  # 304s cost one row update each: up to this many ride along with them
MAX_BACKOFF = timedelta(hours=1)
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class StreamReport:
    source: str
    stream: str
    stored: int = 0
    received: int = 0
    not_modified: bool = False
    error: str | None = None
    parked: str | None = None

    @property
    def shown_error(self) -> str:
        """The error after `source [stream]:`, without the source name it may already start with."""
        return (self.error or "").removeprefix(f"source {self.source}: ")


@dataclass(slots=True)
class Plan:
    """What `_prepare` found for a stream before it is fetched."""

    line: StreamReport
    cursor: dict[str, Any]
    limit: int | None
    fingerprint: str


def _unchanged(plan: Plan, batch: Batch) -> bool:
    """A response with nothing to store: no mention, no cursor change, no warning, no read billed."""
    return (
        batch.not_modified
        and not batch.mentions
        and not batch.warning
        and not batch.reads
        and batch.cursor == plan.cursor
    )


def _replay(batches: list[Batch], error: Exception | None) -> Iterator[Batch]:
    yield from batches
    if error is not None:
        raise error


@dataclass(slots=True)
class CycleReport:
    streams: list[StreamReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    totals: IngestResult = field(default_factory=IngestResult)

    @property
    def errors(self) -> list[StreamReport]:
        return [s for s in self.streams if s.error]


def build_sources(settings: Settings, only: Iterable[str] | None = None) -> list[Source]:
    wanted = set(only) if only else None
    return [build_source(c, settings.brands) for c in settings.sources if wanted is None or c.name in wanted]


class Collector:
    """Polls sources into the database through one Pipeline."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        sources: Sequence[Source] | None = None,
        pipeline: Pipeline | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        # Errors are stored and shown: an API that echoes a token back must not put it there.
        self._redact = RedactSecrets(secret_values(settings)).redact
        self.sources = list(sources) if sources is not None else build_sources(settings)
        self.pipeline = pipeline or Pipeline(settings)
        self.clock = clock
        self.stopping = threading.Event()

    def close(self) -> None:
        for source in self.sources:
            source.close()

    def collect(self, only: Iterable[str] | None = None) -> CycleReport:
        """Poll every enabled source once (or just those named in `only`)."""
        wanted = set(only) if only else None
        report = CycleReport()
        for source in self.sources:
            if wanted is not None and source.name not in wanted:
                continue
            reason = source.disabled_reason()
            if reason:
                report.skipped[source.name] = reason
                log.info("source %s skipped: %s", source.name, reason)
                continue
            self.poll(source, report)
        return report

    def due_sources(self) -> list[Source]:
        """Sources whose next poll time has come (never polled counts as due)."""
        now = self.clock()
        with self.db.session() as session:
            next_polls: dict[str, datetime] = {}
            for row in state.all_states(session):
                if row.next_poll_at is not None:
                    current = next_polls.get(row.source)
                    next_polls[row.source] = min(current, row.next_poll_at) if current else row.next_poll_at
        return [
            s
            for s in self.sources
            if s.disabled_reason() is None and (s.name not in next_polls or next_polls[s.name] <= now)
        ]

    def poll(self, source: Source, report: CycleReport | None = None) -> CycleReport:
        """Poll each stream of one source, then schedule each stream's next poll.

        Streams of a source that allows it (feeds) are fetched concurrently by
        `source.fetch_many`; their batches are still stored one stream after another, in order,
        by this thread. Stops between streams once `stopping` is set, so a shutdown finishes the
        batch in hand and no more.
        """
        report = report if report is not None else CycleReport()
        streams = source.streams()
        if not source.parallel_streams or len(streams) < 2:
            for stream in streams:
                if self.stopping.is_set():
                    break
                report.streams.append(self._poll_stream(source, stream, report.totals))
            return report
        fingerprint = source.fingerprint()
        with self.db.session() as session:  # every stream's state in one query
            known = state.poll_states(session, source.name, streams)
            plans = [self._prepare(source, stream, session, fingerprint, known[stream]) for stream in streams]
        fetched = source.fetch_many(
            [
                StreamRequest(plan.line.stream, plan.cursor, plan.limit)
                for plan in plans
                if plan.line.parked is None
            ]
        )
        group: list[tuple[Plan, Batch]] = []
        changed = posts = 0  # responses with something to store in the group, and their posts
        try:
            for plan in plans:
                if self.stopping.is_set():
                    break
                if plan.line.parked is not None:
                    report.streams.append(plan.line)
                    continue
                outcome = next(fetched)
                if outcome.stream != plan.line.stream:
                    raise RuntimeError(
                        f"{source.name}: fetch_many answered {outcome.stream}, not {plan.line.stream}"
                    )
                if outcome.error is None and len(outcome.batches) == 1:
                    # One clean response: stored with others (its line is filled in then).
                    batch = outcome.batches[0]
                    group.append((plan, batch))
                    report.streams.append(plan.line)
                    changed += not _unchanged(plan, batch)
                    posts += len(batch.mentions)
                    if changed >= GROUP_STREAMS or posts >= GROUP_MENTIONS or len(group) >= GROUP_UNCHANGED:
                        self._ingest_group(source, group, report.totals)
                        group, changed, posts = [], 0, 0
                    continue
                self._ingest_group(source, group, report.totals)  # keep the streams in order
                group, changed, posts = [], 0, 0
                replay = _replay(outcome.batches, outcome.error)
                report.streams.append(
                    self._ingest_stream(source, plan.line.stream, plan, report.totals, replay)
                )
            self._ingest_group(source, group, report.totals)
        finally:
            fetched.close()  # cancels what is still being fetched (stopping)
        return report

    def _ingest_group(self, source: Source, group: list[tuple[Plan, Batch]], totals: IngestResult) -> None:
        """Several streams' clean responses in one transaction: one analysis pass, one commit;
        what each stream received and stored goes on its `plan.line`.

        A thousand feeds with a post or two each would otherwise pay a transaction and a tiny
        analysis batch apiece. Each stream's cursor is still saved with its own mentions (same
        transaction). If the group fails, each stream is stored on its own, so one bad
        response cannot hold back the others and its error is recorded on its own stream.
        """
        if not group:
            return
        if len(group) == 1:
            plan, batch = group[0]
            self._ingest_stream(source, batch.stream, plan, totals, iter([batch]))
            return
        try:
            flags = [_unchanged(plan, batch) for plan, batch in group]
            with self.db.session() as session:
                now = self.clock()
                changed = [batch for (_plan, batch), same in zip(group, flags, strict=True) if not same]
                total, results = IngestResult(), [IngestResult() for _ in changed]
                if changed:
                    state.preload(session, source.name, [batch.stream for batch in changed])
                    total, results = self.pipeline.ingest_batches(
                        session, changed, source=source.name, now=now, brands=source.config.brands
                    )
                    for batch in changed:
                        if batch.reads:
                            state.add_reads(session, source.name, now, batch.reads)
                        warning = self._redact(batch.warning) if batch.warning else None
                        state.record_warning(session, source.name, batch.stream, warning)
                        state.schedule(session, source.name, batch.stream, self._next_poll(source, 0, None))
                # 304s: no mention, no cursor to store; their state rows in one statement.
                unchanged = [batch.stream for (_plan, batch), same in zip(group, flags, strict=True) if same]
                if unchanged:
                    state.record_not_modified(
                        session, source.name, unchanged, now, self._next_poll(source, 0, None)
                    )
        except Exception as exc:  # noqa: BLE001 - each stream is retried alone below, which records its error
            log.info(
                "source %s: %d streams stored together failed (%s); storing them one by one",
                source.name,
                len(group),
                type(exc).__name__,
            )
            for plan, batch in group:
                for mention in batch.mentions:
                    mention.id = None  # assigned by the insert that was rolled back
                self._ingest_stream(source, batch.stream, plan, totals, iter([batch]))
            return
        totals.add(total)
        by_stream = dict(zip((batch.stream for batch in changed), results, strict=True))
        for plan, batch in group:
            result = by_stream.get(batch.stream)  # None: nothing to store (a 304)
            line = plan.line
            line.not_modified = batch.not_modified
            line.received, line.stored = (result.received, result.stored) if result else (0, 0)
            if batch.warning:
                log.warning("source %s [%s]: %s", source.name, batch.stream, batch.warning)
            log.info("source %s: %d new of %d from %s", source.name, line.stored, line.received, batch.stream)

    def poll_if_due(self, source: Source, early: timedelta = timedelta(0)) -> CycleReport | None:
        """Poll `source` if no other node holds it and its next poll time has come (within
        `early`): the scheduler of every node may ask; one node polls per interval."""
        if source.disabled_reason():
            return None
        with source_lease(self.db, source.name) as held:
            if not held:
                return None
            with self.db.session() as session:
                times = [
                    row.next_poll_at
                    for row in state.all_states(session)
                    if row.source == source.name and row.next_poll_at is not None
                ]
            if times and min(times) > self.clock() + early:
                return None
            return self.poll(source)

    def _next_poll(self, source: Source, errors: int, parked_until: datetime | None) -> datetime:
        """On success: `every` plus jitter. On failure: exponential backoff (capped), with jitter."""
        now = self.clock()
        if parked_until is not None and parked_until > now:
            return parked_until
        every = source.config.every
        if errors:
            delay = min(every * 2 ** min(errors - 1, 10), max(every, MAX_BACKOFF))
            return now + delay * random.uniform(0.8, 1.2)
        return now + every + self.settings.poll_jitter * random.random()

    def _prepare(
        self,
        source: Source,
        stream: str,
        session: Session | None = None,
        fingerprint: str | None = None,
        known: state.PollState | None = None,
    ) -> Plan:
        """Read the stream's cursor (unless `known` has it), and decide whether it is parked
        (rate limit, cap, credentials)."""
        if session is None:
            with self.db.session() as own:
                return self._prepare(source, stream, own, fingerprint, known)
        line = StreamReport(source.name, stream)
        fingerprint = fingerprint or source.fingerprint()
        cap = source.config.monthly_read_cap
        limit: int | None = None
        row = known or state.get_state(session, source.name, stream)
        cursor = dict(row.cursor or {})
        if cap is None and not row.parked_reason:  # most streams: nothing to decide
            return Plan(line, cursor, limit, fingerprint)
        now = self.clock()
        line.parked = state.parked_reason(row, now, fingerprint)
        if line.parked is None and cap is not None:
            used = state.reads_this_month(session, source.name, now)
            if cap - used < source.min_request_reads:
                reason = f"monthly read cap reached ({used}/{cap} posts read this month)"
                state.park(session, source.name, stream, reason, state.next_month(now))
                line.parked = f"{reason}; resumes {state.next_month(now):%Y-%m-%d}"
            limit = cap - used
        if line.parked is not None:
            state.schedule(session, source.name, stream, self._next_poll(source, 0, row.parked_until))
            log.info("source %s [%s] skipped: %s", source.name, stream, line.parked)
        return Plan(line, cursor, limit, fingerprint)

    def _poll_stream(
        self, source: Source, stream: str, totals: IngestResult, fetched: Iterator[Batch] | None = None
    ) -> StreamReport:
        """Fetch (unless `fetched` already did) and ingest one stream, batch by batch."""
        plan = self._prepare(source, stream)
        return self._ingest_stream(source, stream, plan, totals, fetched)

    def _ingest_stream(
        self, source: Source, stream: str, plan: Plan, totals: IngestResult, fetched: Iterator[Batch] | None
    ) -> StreamReport:
        line, fingerprint = plan.line, plan.fingerprint
        if line.parked is not None:
            return line
        retry_at: datetime | None = None
        refused = False
        scheduled = False
        warning: str | None = None  # this poll's, kept over its later clean pages
        try:
            batches = fetched if fetched is not None else source.fetch(stream, plan.cursor, limit=plan.limit)
            for batch in batches:
                line.not_modified = batch.not_modified
                warning = self._redact(batch.warning) if batch.warning else warning
                with self.db.session() as session:
                    batch_time = self.clock()
                    result = self.pipeline.ingest(
                        session,
                        batch.mentions,
                        source=source.name,
                        stream=batch.stream,
                        cursor=batch.cursor,
                        now=batch_time,
                        brands=source.config.brands,
                        # The next poll, as if this were the last batch (it usually is: one
                        # feed response): no transaction of its own. A later failure reschedules.
                        state_also={
                            "last_warning": warning,
                            "next_poll_at": self._next_poll(source, 0, None),
                        },
                    )
                    if batch.reads:
                        state.add_reads(session, source.name, batch_time, batch.reads)
                    scheduled = True
                if batch.warning:
                    log.warning("source %s [%s]: %s", source.name, stream, batch.warning)
                line.received += result.received
                line.stored += result.stored
                totals.add(result)
        except SourceError as exc:
            line.error, retry_at, refused = (
                self._redact(str(exc)),
                exc.retry_at,
                isinstance(exc, AccessRefusedError),
            )
        except Exception as exc:
            log.exception("source %s crashed on %s", source.name, stream)
            line.error = self._redact(f"internal error ({type(exc).__name__}: {exc}); please report it")
        if line.error or not scheduled:
            with self.db.session() as session:
                errors = 0
                if line.error:
                    errors = state.record_failure(
                        session,
                        source.name,
                        stream,
                        line.error,
                        self.clock(),
                        park_until=retry_at,
                        park_fingerprint=fingerprint if refused else None,
                    )
                state.schedule(session, source.name, stream, self._next_poll(source, errors, retry_at))
        if line.error:
            log.warning("source %s [%s]: %s", source.name, stream, line.shown_error)
        else:
            log.info("source %s: %d new of %d from %s", source.name, line.stored, line.received, stream)
        return line
