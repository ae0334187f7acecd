"""Logging setup: human or JSON lines, and secrets scrubbed from every record."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

_installed: list[logging.Filter] = []


class RedactSecrets(logging.Filter):
    """Replace every known secret value in a record's final message with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets = sorted({*self.secrets, secret}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = self.redact(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text or record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, ensure_ascii=False)


def secret_values(model: Any) -> list[str]:
    """Every SecretStr value inside a (nested) pydantic model."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, SecretStr):
            found.append(node.get_secret_value())
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(model)
    return found


def configure(level: str = "WARNING", fmt: str = "human") -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    for old in list(root.handlers):
        if getattr(old, "_monitor", False):
            root.removeHandler(old)
    handler._monitor = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Migrations announce themselves at INFO on every start; only their problems matter here.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    # APScheduler logs every job run at INFO (every 10 s for delivery): keep its warnings only.
    logging.getLogger("apscheduler").setLevel(max(root.level, logging.WARNING))


def redact_secrets(secrets: Iterable[str]) -> RedactSecrets:
    """Scrub these values from all log output (installed on every handler of the root logger)."""
    redactor = RedactSecrets(secrets)
    for handler in logging.getLogger().handlers:
        for old in _installed:
            handler.removeFilter(old)
        handler.addFilter(redactor)
    _installed[:] = [redactor]
    return redactor
