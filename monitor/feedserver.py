"""A small local HTTP server for feeds, with ETag/Last-Modified and 304s.

`monitor demo` serves its bundled sample through it, and the tests build their fault modes on
top of it; nothing here is used by the daemon itself.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/atom+xml; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    conditional: bool = True
    last_modified: str = field(default_factory=lambda: formatdate(usegmt=True))
    handler: Callable[[BaseHTTPRequestHandler], None] | None = None
    _etag: tuple[bytes, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def etag(self) -> str:
        """A hash of the body, computed once per body (as a real server keeps its validators)."""
        if self._etag is None or self._etag[0] is not self.body:
            self._etag = (self.body, '"' + hashlib.sha1(self.body).hexdigest()[:16] + '"')
        return self._etag[1]


class _Headers(HTTPMessage):
    """The request's headers, and the first value of each by its lower-cased name."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[str, str] = {}


def _parse_request(request: BaseHTTPRequestHandler) -> bool | None:
    """`BaseHTTPRequestHandler.parse_request` for a plain HTTP/1.x request line (None for any
    other: http.server's own handles it), with the headers read as a real server reads them
    rather than through the email package, whose parser cost more than all the rest of a 304.
    Same result: every header in an `HTTPMessage`, the same limits (line length, header
    count), keep-alive and `Expect: 100-continue` as http.server does.

    The first value of each header is also indexed by its lower-cased name (`_Headers.first`):
    `HTTPMessage.get` scans and re-checks every header on each call.
    """
    raw: bytes = request.raw_requestline  # type: ignore[attr-defined]  # read by handle_one_request
    words = raw.split()
    if len(words) != 3 or words[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    requestline = str(raw, "iso-8859-1").rstrip("\r\n")
    request.requestline = requestline
    request.command, path, request.request_version = requestline.split()
    request.path = "/" + path.lstrip("/") if path.startswith("//") else path
    headers = _Headers()
    fields: list[list[str]] = []
    while True:
        line = request.rfile.readline(65537)
        if len(line) > 65536:
            request.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
            return False
        if line in (b"\r\n", b"\n", b""):
            break
        if len(fields) >= 100:
            request.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        text = line.decode("iso-8859-1")
        if text[:1] in (" ", "\t") and fields:  # a folded continuation of the header before
            fields[-1][1] += text.rstrip("\r\n")
            continue
        name, _, value = text.partition(":")
        fields.append([name, value.lstrip(" \t").rstrip("\r\n")])
    first = headers.first
    for name, value in fields:
        headers.set_raw(name, value)
        first.setdefault(name.lower(), value)
    request.headers = headers
    connection = first.get("connection", "").lower()
    if request.request_version == "HTTP/1.1":
        request.close_connection = connection == "close"
    else:
        request.close_connection = connection != "keep-alive"
    if first.get("expect", "").lower() == "100-continue" and request.request_version == "HTTP/1.1":
        return request.handle_expect_100()
    return True


def _header(request: BaseHTTPRequestHandler, name: str) -> str | None:
    """`request.headers.get(name)`, from the index when `_parse_request` read the headers."""
    headers = request.headers
    return headers.first.get(name.lower()) if isinstance(headers, _Headers) else headers.get(name)


def _respond(
    request: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes = b""
) -> None:
    """`send_response`, `send_header` for each header, `end_headers`, then the body: the same
    bytes in one write, and the Date formatted once a second rather than once a response."""
    if not isinstance(request.headers, _Headers):  # not read by `_parse_request`: http.server's way
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)
        return
    lines = [
        f"{request.protocol_version} {status} {request.responses.get(status, ('',))[0]}\r\n"
        f"Server: {request.version_string()}\r\nDate: {_date()}\r\n"
    ]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
        if name.lower() == "connection":
            if value.lower() == "close":
                request.close_connection = True
            elif value.lower() == "keep-alive":
                request.close_connection = False
    lines.append("\r\n")
    request.wfile.write("".join(lines).encode("latin-1", "strict") + body)


_dates: list[tuple[int, str]] = [(0, "")]


def _date() -> str:
    """`BaseHTTPRequestHandler.date_time_string()`, formatted once per second."""
    now = int(time.time())
    second, text = _dates[-1]
    if second != now:
        text = formatdate(now, usegmt=True)
        _dates[-1] = (now, text)
    return text


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many feeds fetched at once: no dropped connections


@dataclass(frozen=True)
class Hit:
    path: str
    status: int
    headers: dict[str, str]


class FeedServer:
    """`with FeedServer() as server: server.add("/feed", body); url = server.url("/feed")`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle and delayed ACKs
            # add 40 ms to every request on a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def parse_request(self) -> bool:
                parsed = _parse_request(self)
                return super().parse_request() if parsed is None else parsed

            def do_GET(self) -> None:
                server._serve(self)

        self._httpd = _Server((host, 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="feedserver", daemon=True
        )

    def add(self, path: str, body: bytes | str = b"", **options: Any) -> str:
        self.routes[path] = Route(body=body.encode() if isinstance(body, str) else body, **options)
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}{path}"

    def hits_for(self, path: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]

    def record(self, request: BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.hits.append(Hit(request.path, status, dict(request.headers.raw_items())))

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        route = self.routes.get(request.path)
        if route is None:
            self.record(request, 404)
            request.send_error(404)
            return
        if route.handler is not None:
            self.record(request, route.status)
            route.handler(request)
            return
        headers = dict(route.headers)
        if route.conditional and route.status == 200:
            headers.setdefault("ETag", route.etag)
            headers.setdefault("Last-Modified", route.last_modified)
            validator = _header(request, "If-None-Match")
            if validator == route.etag or (
                validator is None and _header(request, "If-Modified-Since") == route.last_modified
            ):
                self.record(request, 304)
                _respond(request, 304, [("ETag", route.etag), ("Content-Length", "0")])
                return
        self.record(request, route.status)
        _respond(
            request,
            route.status,
            [
                ("Content-Type", route.content_type),
                ("Content-Length", str(len(route.body))),
                *headers.items(),
            ],
            route.body,
        )

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
