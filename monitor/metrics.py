"""Prometheus metrics for `monitor run --metrics-port` (prometheus_client)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
MENTIONS = Counter("monitor_mentions_collected", "Mentions stored", ["source"], registry=REGISTRY)
FLAGS = Counter("monitor_flags", "Flags raised", ["source"], registry=REGISTRY)
ALERTS_SENT = Counter("monitor_alerts_sent", "Alerts delivered", registry=REGISTRY)
ALERTS_FAILED = Counter("monitor_alerts_failed", "Alert deliveries that gave up", registry=REGISTRY)
SOURCE_ERRORS = Counter("monitor_source_errors", "Failed polls of a stream", ["source"], registry=REGISTRY)
POLL_SECONDS = Histogram(
    "monitor_poll_duration_seconds", "Time to poll a source", ["source"], registry=REGISTRY
)
OUTBOX_PENDING = Gauge("monitor_outbox_pending", "Alerts waiting to be delivered", registry=REGISTRY)


def serve(port: int, host: str = "127.0.0.1") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
