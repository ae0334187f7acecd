"""`monitor run`: the scheduler that polls sources, delivers alerts and keeps the database tidy.

APScheduler 3.x runs one job per source at its `every` (with jitter, one instance at a time,
coalescing missed runs), plus alert delivery, aggregate rules and retention. Every node asks;
the source lease and the next-poll time in the database decide which node polls, so any number
of nodes share one PostgreSQL and a dead node's sources are taken over within two intervals.
SIGTERM/SIGINT stop after the batch in hand and a last delivery; SIGHUP reloads the config (a
broken new config is logged and the old one keeps running).
"""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from monitor import metrics
from monitor.alerts.outbox import Delivery, notifiers_for
from monitor.collector import Collector
from monitor.config import Settings, load_config
from monitor.errors import MonitorError, StorageError
from monitor.sources import Source
from monitor.storage import retention
from monitor.storage.db import Database
from monitor.storage.leases import NodeLock

log = logging.getLogger(__name__)
DELIVERY_EVERY = timedelta(seconds=10)
RETENTION_EVERY = timedelta(hours=1)
AGGREGATES_EVERY = timedelta(minutes=1)
STOP_WITHIN = 10.0  # seconds: what SIGTERM may take


class Daemon:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        config_path: str | Path | None = None,
        load: Callable[[str | Path | None], Settings] = load_config,
    ) -> None:
        self.settings = settings
        self.db = db
        self.config_path = config_path
        self.load = load
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        self._lock = threading.Lock()
        self._running = 0  # jobs in progress, so shutdown can wait for the batch in hand
        self._running_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        self._build()

    def _build(self) -> None:
        self.collector = Collector(self.settings, self.db)
        self.delivery = Delivery(self.db, notifiers_for(self.settings.channels))

    def _schedule(self) -> None:
        for job in self.scheduler.get_jobs():
            job.remove()
        jitter = max(1, int(self.settings.poll_jitter.total_seconds()))
        for source in self.collector.sources:
            reason = source.disabled_reason()
            if reason:
                log.warning("source %s will not run: %s", source.name, reason)
                continue
            seconds = max(1, int(source.config.every.total_seconds()))
            self.scheduler.add_job(
                self._tracked(self._poll),
                "interval",
                args=[source],
                seconds=seconds,
                jitter=min(jitter, max(1, seconds // 4)),
                id=f"poll:{source.name}",
                next_run_time=datetime.now(UTC),
            )
        self.scheduler.add_job(
            self._tracked(self._deliver), "interval", seconds=DELIVERY_EVERY.total_seconds(), id="deliver"
        )
        self.scheduler.add_job(
            self._aggregates, "interval", seconds=AGGREGATES_EVERY.total_seconds(), id="aggregates"
        )
        if self.settings.retention_days:
            self.scheduler.add_job(
                self._retention, "interval", seconds=RETENTION_EVERY.total_seconds(), id="retention",
                next_run_time=datetime.now(UTC),
            )  # fmt: skip

    def _tracked(self, job: Callable[..., None]) -> Callable[..., None]:
        def run(*args: object) -> None:
            with self._running_lock:
                self._running += 1
            try:
                job(*args)
            finally:
                with self._running_lock:
                    self._running -= 1

        return run

    def _poll(self, source: Source) -> None:
        if self.stop.is_set():
            return
        started = time.monotonic()
        try:
            # A node may poll a little early: the schedulers of several nodes are not in phase.
            report = self.collector.poll_if_due(source, early=source.config.every / 10)
        except StorageError as exc:
            log.error("source %s: database unavailable, will retry: %s", source.name, exc)
            return
        if report is None:
            return
        metrics.POLL_SECONDS.labels(source.name).observe(time.monotonic() - started)
        metrics.MENTIONS.labels(source.name).inc(report.totals.stored)
        metrics.FLAGS.labels(source.name).inc(report.totals.flags)
        if report.errors:
            metrics.SOURCE_ERRORS.labels(source.name).inc(len(report.errors))
        if report.totals.alerts_queued:
            self._deliver()  # alerts go out as soon as their flags are stored

    def _deliver(self) -> None:
        with self._lock:
            try:
                result = self.delivery.run_once()
            except StorageError as exc:
                log.error("alert delivery: database unavailable, will retry: %s", exc)
                return
        metrics.ALERTS_SENT.inc(result.sent)
        metrics.ALERTS_FAILED.inc(result.failed)

    def _aggregates(self) -> None:
        try:
            aggregates = importlib.import_module("monitor.rules.aggregates")
        except ImportError:
            return
        try:
            with self.db.session() as session:
                aggregates.evaluate_aggregates(session, self.settings, datetime.now(UTC))
        except MonitorError as exc:
            log.error("aggregate rules: %s", exc)

    def _retention(self) -> None:
        assert self.settings.retention_days
        try:
            deleted = retention.purge(self.db, self.settings.retention_days, datetime.now(UTC))
        except StorageError as exc:
            log.error("retention: database unavailable, will retry: %s", exc)
            return
        if deleted:
            log.info(
                "retention: deleted %d mentions older than %d days", deleted, self.settings.retention_days
            )

    def reload(self) -> bool:
        """Swap in the config file's current content; keep the old one if it is invalid."""
        try:
            settings = self.load(self.config_path)
        except MonitorError as exc:
            log.error("reload refused, still running the previous config: %s", exc)
            return False
        old = self.collector
        self.settings = settings
        self._build()
        self._schedule()
        old.close()
        log.info("config reloaded: %d sources", len(self.collector.sources))
        return True

    def install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
            self.stop.set()
            self.collector.stopping.set()

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def run(self) -> None:
        """Block until asked to stop; returns after a clean shutdown."""
        node = NodeLock(self.db)
        node.acquire()
        try:
            # What start-up built (model vocabularies, compiled rules, config) lives as long as the
            # process: out of the collector's sight, every full collection is that much shorter.
            gc.freeze()
            self._schedule()
            self.scheduler.start()
            log.info(
                "monitor running: %d sources, database %s", len(self.collector.sources), self.db.shown_url
            )
            while not self.stop.wait(0.2):
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
            self.scheduler.shutdown(wait=False)
            deadline = time.monotonic() + STOP_WITHIN - 2
            while self._running and time.monotonic() < deadline:
                time.sleep(0.05)
            self._deliver()  # flush what the last batch queued
        finally:
            self.collector.close()
            for notifier in self.delivery.notifiers.values():
                notifier.close()
            node.release()
        log.info("monitor stopped")


def run_forever(
    settings: Settings, db: Database, *, config_path: str | Path | None = None, metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:  # fmt: skip
    if metrics_port:
        metrics.serve(metrics_port, metrics_host)
    daemon = Daemon(settings, db, config_path=config_path)
    if threading.current_thread() is threading.main_thread():
        daemon.install_signals()
    daemon.run()
