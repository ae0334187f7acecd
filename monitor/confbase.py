"""Building blocks shared by every config model: a frozen base and human durations.

Kept apart from `config.py` so that sources and channels can declare their own settings
(one file per source or channel) without importing the loader.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

_DURATION = re.compile(r"(\d+)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Frozen(BaseModel):
    """Config objects are immutable and reject unknown keys (a typo is an error, not a silent default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_duration(value: Any) -> timedelta:
    """Read `30s`, `5m`, `1h`, `7d`, `1h30m` (or a number of seconds) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += int(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {value!r}")
    else:
        raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The inverse of parse_duration, so settings dumped to JSON/YAML load back unchanged."""
    millis = round(delta.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis}ms"
    seconds = millis // 1000
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    """1 for low .. 4 for critical; 0 for anything else."""
    return SEVERITIES.index(severity) + 1 if severity in SEVERITIES else 0  # type: ignore[arg-type]


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: format_duration(d), when_used="json"),
]


def check_http_url(value: Any) -> str:
    """Only http(s) URLs with a host: a `file:` URL or a local path must never reach a fetcher."""
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"only http:// and https:// URLs are allowed, got {value!r} "
            "(local files and other schemes are refused)"
        )
    return value.strip()


HttpUrl = Annotated[str, BeforeValidator(check_http_url)]
