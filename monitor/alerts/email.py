"""Email over SMTP (STARTTLS or implicit TLS, optional login): text and HTML parts.

With `digest: 1h` the channel gathers its alerts and sends one message per period.
"""

from __future__ import annotations

import html
import smtplib
import ssl
from collections.abc import Sequence
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from monitor.alerts.base import ChannelConfig, Notifier
from monitor.alerts.message import AlertMessage
from monitor.confbase import Duration
from monitor.errors import DeliveryError


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


def _one_line(text: str) -> str:
    """Header-safe: post data in a subject must not add headers."""
    return " ".join(text.split())[:200]


def render_text(messages: Sequence[AlertMessage]) -> str:
    parts = []
    for message in messages:
        lines = [message.headline, ""]
        if message.author:
            followers = (
                f" ({message.author_followers:,} followers)" if message.author_followers is not None else ""
            )
            lines.append(f"Author: {message.author}{followers}")
        lines.append(f"Source: {message.source or '?'}")
        if message.safe_url():
            lines.append(f"Link: {message.safe_url()}")
        lines += ["", message.excerpt, ""]
        lines += [f"Why: {line}" for line in message.why]
        if message.command:
            lines.append(f"Act: {message.command}")
        parts.append("\n".join(lines))
    return "\n\n----\n\n".join(parts) + "\n"


def render_html(messages: Sequence[AlertMessage]) -> str:
    """Every piece of post data goes through html.escape: a post cannot inject markup."""
    items = []
    for message in messages:
        e = html.escape
        url = message.safe_url()
        link = f'<p><a href="{e(url, quote=True)}">Open the post</a></p>' if url else ""
        why = "".join(f"<li>{e(line)}</li>" for line in message.why)
        author = e(message.author or "unknown author")
        if message.author_followers is not None:
            author += f" ({message.author_followers:,} followers)"
        items.append(
            f"<h3>{e(message.headline)}</h3>"
            f"<p><b>Author:</b> {author} &middot; <b>Source:</b> {e(message.source or '?')}</p>"
            f"<blockquote>{e(message.excerpt)}</blockquote>{link}"
            + (f"<p><b>Why</b></p><ul>{why}</ul>" if why else "")
            + (f"<p>Act: <code>{e(message.command)}</code></p>" if message.command else "")
        )
    return "<!doctype html><html><body>" + "<hr>".join(items) + "</body></html>"


class EmailNotifier(Notifier):
    type = "email"
    Config = EmailConfig
    config: EmailConfig

    @property
    def digest(self) -> float | None:
        return self.config.digest.total_seconds() if self.config.digest else None

    def build(self, messages: Sequence[AlertMessage]) -> EmailMessage:
        mail = EmailMessage()
        if len(messages) == 1:
            subject = f"[monitor] {messages[0].headline}"
        else:
            top = max(messages, key=lambda m: ("low", "medium", "high", "critical").index(m.severity))
            subject = f"[monitor] {len(messages)} new alerts (top: {top.headline})"
        mail["Subject"] = _one_line(subject)
        mail["From"] = self.config.from_
        mail["To"] = ", ".join(self.config.to)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain=self.config.from_.rpartition("@")[2] or None)
        mail.set_content(render_text(messages))
        mail.add_alternative(render_html(messages), subtype="html")
        return mail

    def send(self, messages: Sequence[AlertMessage]) -> None:
        if not messages:
            return
        where = f"email channel {self.name!r} ({self.config.host}:{self.config.port})"
        timeout = self.config.timeout.total_seconds()
        try:
            smtp: smtplib.SMTP
            if self.config.ssl:
                smtp = smtplib.SMTP_SSL(
                    self.config.host, self.config.port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.config.host, self.config.port, timeout=timeout)
            with smtp:
                if self.config.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.config.username and self.config.password is not None:
                    smtp.login(self.config.username, self.config.password.get_secret_value())
                smtp.send_message(self.build(messages))
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError(
                f"{where}: login refused for user {self.config.username!r}", permanent=True
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(
                f"{where}: recipients refused: {', '.join(exc.recipients)}", permanent=True
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"{where}: the server does not support {exc} (check starttls/ssl)") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}"[:300]) from None
