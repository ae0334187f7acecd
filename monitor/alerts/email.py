"""Email (SMTP) channel settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from monitor.alerts.base import ChannelConfig
from monitor.confbase import Duration


class EmailConfig(ChannelConfig):
    type: Literal["email"] = "email"
    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field(alias="from")
    to: tuple[str, ...] = Field(min_length=1)
    digest: Duration | None = None
    timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailConfig:
        if self.ssl and self.starttls:
            raise ValueError(
                "choose one of `ssl: true` (implicit TLS, port 465) or `starttls: true` (port 587)"
            )
        return self
