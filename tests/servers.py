"""Real local servers standing in for Slack's webhook and an SMTP relay."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword


@dataclass
class SlackWebhook:
    """Records every POST; `mode` decides the answer: ok, 500, 429, slow, gone."""

    mode: str = "ok"
    retry_after: int = 7
    posts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""

    def texts(self) -> list[str]:
        return [json.dumps(p, ensure_ascii=False) for p in self.posts]


@contextmanager
def slack_webhook() -> Iterator[SlackWebhook]:
    state = SlackWebhook()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                state.attempts += 1
                mode = state.mode
            if mode == "slow":
                time.sleep(2.5)
            if mode in ("ok", "slow"):
                with lock:
                    state.posts.append(json.loads(body))
                self._answer(200, "ok")
            elif mode == "429":
                self._answer(429, "rate_limited", {"Retry-After": str(state.retry_after)})
            elif mode == "gone":
                self._answer(404, "no_service")
            else:
                self._answer(500, "internal_error")

        def _answer(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError):  # the client gave up (the "slow" mode's point)
                self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/s3cr3tw3bh00k"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Mailbox:
    messages: list[Envelope] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0


@contextmanager
def smtp_server(*, user: str | None = None, password: str | None = None) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) that keeps what it receives; with login when `user` is set."""
    box = Mailbox()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
            box.messages.append(envelope)
            return "250 Message accepted for delivery"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if (
            isinstance(data, LoginPassword)
            and data.login.decode() == user
            and data.password.decode() == password
        ):
            box.logins.append(user or "")
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    options: dict[str, Any] = {}
    if user:
        options = {"authenticator": authenticate, "auth_require_tls": False}
    box.port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
