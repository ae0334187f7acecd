"""Secrets from the config never reach a log line."""

from __future__ import annotations

import json
import logging

import pytest

from monitor import logs
from monitor.config import settings_from_dict


def test_configured_secrets_are_redacted_from_logs(capfd: pytest.CaptureFixture[str]) -> None:
    settings = settings_from_dict(
        {
            "brands": [{"name": "B"}],
            "sources": [{"type": "twitter", "name": "x", "bearer_token": "${X_BEARER_TOKEN}"}],
            "channels": {"ops": {"type": "slack", "webhook_url": "${HOOK}"}},
        },
        env={"X_BEARER_TOKEN": "AAAAtoken-1234", "HOOK": "https://hooks.example/T0/B0/s3cr3t"},
    )
    assert set(logs.secret_values(settings)) == {"AAAAtoken-1234", "https://hooks.example/T0/B0/s3cr3t"}
    for fmt in ("human", "json"):
        logs.configure("INFO", fmt)
        logs.redact_secrets(logs.secret_values(settings))
        log = logging.getLogger("monitor.test")
        log.warning("posting to %s failed", "https://hooks.example/T0/B0/s3cr3t")
        try:
            raise RuntimeError("401 for Bearer AAAAtoken-1234")
        except RuntimeError:
            log.exception("X call failed")
        err = capfd.readouterr().err
        assert "s3cr3t" not in err and "AAAAtoken-1234" not in err
        assert "posting to *** failed" in err and "Bearer ***" in err
        if fmt == "json":
            lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
            assert lines[0]["message"] == "posting to *** failed" and lines[0]["level"] == "warning"
    logs.configure("WARNING", "human")
