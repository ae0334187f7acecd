"""`monitor run`: poll each source when it is due and deliver alerts, until SIGINT/SIGTERM.

A plain loop over `Collector.due_sources()`; each source's next poll time lives in the
database, so a restart resumes the schedule instead of hammering every feed at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from types import FrameType

from monitor.alerts.outbox import Delivery, notifiers_for
from monitor.collector import Collector, utcnow
from monitor.config import Settings
from monitor.errors import StorageError
from monitor.storage.db import Database

log = logging.getLogger(__name__)
MAX_SLEEP = timedelta(seconds=10)  # also how often due alert retries are looked at


def run_forever(settings: Settings, db: Database, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping after the current poll", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    collector = Collector(settings, db)
    delivery = Delivery(db, notifiers_for(settings.channels))
    log.info("monitor running: %d sources, database %s", len(collector.sources), db.shown_url)
    for source in collector.sources:
        reason = source.disabled_reason()
        if reason:
            log.warning("source %s will not run: %s", source.name, reason)
    try:
        while not stop.is_set():
            try:
                for source in collector.due_sources():
                    if stop.is_set():
                        break
                    collector.poll(source)
                    delivery.run_once()  # alerts go out as soon as their flags are stored
                delivery.run_once()
                next_due = collector.next_due_at()
            except StorageError as exc:
                log.error("database unavailable, retrying: %s", exc)
                next_due = None
            wait = MAX_SLEEP if next_due is None else min(MAX_SLEEP, max(timedelta(0), next_due - utcnow()))
            stop.wait(max(wait.total_seconds(), 0.05))
    finally:
        collector.close()
        for notifier in delivery.notifiers.values():
            notifier.close()
    log.info("monitor stopped")
