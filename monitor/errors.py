"""The error tree. Callers catch by kind; the CLI maps kinds to exit codes.

MonitorError
├── ConfigError        bad or missing configuration (exit code 2)
├── StorageError       the database cannot be reached or migrated
├── SourceError        a source could not be read this cycle
│   ├── RetriableSourceError   transient (timeout, 5xx, reset): try again next poll
│   └── FatalSourceError       needs a human (bad URL, 4xx, refused scheme)
│       └── AccessRefusedError credentials refused: parked until the settings change
├── RuleError          a rule cannot be compiled or evaluated
└── DeliveryError      an alert could not be delivered
"""

from __future__ import annotations

from datetime import datetime


class MonitorError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigError(MonitorError):
    """The configuration is invalid. The message names the file, the key path and what is expected."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None) -> None:
        self.file = file
        self.path = path
        self.message = message
        where = ": ".join(part for part in (file, path) if part)
        super().__init__(f"{where}: {message}" if where else message)


class StorageError(MonitorError):
    """The database failed in a way the user must fix (unreachable, wrong schema)."""


class SourceError(MonitorError):
    """A source failed for this poll; its cursor does not move and other sources go on.

    `retry_at` (e.g. an API's rate-limit reset) parks the stream until then. A non-retriable
    error parks it until its config changes.
    """

    retriable = True

    def __init__(self, message: str, *, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class RetriableSourceError(SourceError):
    retriable = True


class FatalSourceError(SourceError):
    """Needs a human (bad URL, 4xx, refused scheme); still retried, with backoff."""

    retriable = False


class AccessRefusedError(FatalSourceError):
    """The provider refused our credentials or access level: park until the source's settings change."""


class RuleError(MonitorError):
    """A rule is invalid (at load) or failed on a mention."""


class DeliveryError(MonitorError):
    """A notifier could not deliver an alert. The message never contains the channel's secrets.

    `retry_after` (seconds, e.g. Slack's 429 Retry-After) tells the outbox when to try again;
    `permanent` means retrying cannot help (bad address, revoked webhook).
    """

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
