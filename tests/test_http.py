"""The one HTTP client (`monitor.http.Fetcher`) against a real local server: its guarantees hold
for one request (`get`) and for many at once (`get_many`), whatever the server does."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from monitor import USER_AGENT
from monitor.errors import FatalSourceError, RetriableSourceError, SourceError
from monitor.feedserver import FeedServer
from monitor.http import Fetcher, Response, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://news.example/rss?q=brand&hl=fr", "https://news.example/rss?q=brand&hl=fr"),
        ("https://user:hunter2@feeds.example/x", "https://***@feeds.example/x"),
        ("https://a.example/f?api_key=S3CR3T&q=b", "https://a.example/f?api_key=***&q=b"),
        ("https://a.example/f?q=b&access_token=S3CR3T", "https://a.example/f?q=b&access_token=***"),
        ("https://a.example/f?monkey=1", "https://a.example/f?monkey=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    fetcher = Fetcher(timeout=1.0, max_bytes=5000, max_redirects=3)
    yield fetcher
    fetcher.close()


def _reply(
    body: bytes, *, status: int = 200, headers: dict[str, str] | None = None, length: bool = True
) -> Callable[[BaseHTTPRequestHandler], None]:
    def handler(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        if length:
            request.send_header("Content-Length", str(len(body)))
        else:
            request.close_connection = True
        request.end_headers()
        request.wfile.write(body)

    return handler


def _sleeping(seconds: float, body: bytes = b"ok") -> Callable[[BaseHTTPRequestHandler], None]:
    reply = _reply(body)

    def handler(request: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        reply(request)

    return handler


def _stalling_body(request: BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Length", "4000")
    request.end_headers()
    request.wfile.write(b"x" * 10)
    request.wfile.flush()
    time.sleep(3)  # the rest never comes in time


def _reset(request: BaseHTTPRequestHandler) -> None:
    request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    request.connection.close()
    request.close_connection = True


# --- one request -----------------------------------------------------------------------------


def test_get_sends_the_user_agent_and_ignores_proxies_from_the_environment(
    feed_server: FeedServer, fetcher: Fetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    url = feed_server.add("/feed", "<rss/>")
    response = fetcher.get(url, {"If-None-Match": '"x"'})
    assert response.status == 200 and response.body == b"<rss/>" and response.url == url
    assert response.headers["etag"] == response.headers["ETag"]  # case-insensitive
    (hit,) = feed_server.hits_for("/feed")
    assert hit.headers["User-Agent"] == USER_AGENT and hit.headers["If-None-Match"] == '"x"'


def test_redirects_are_followed_and_every_hop_is_checked(feed_server: FeedServer, fetcher: Fetcher) -> None:
    target = feed_server.add("/target", "<rss/>")
    feed_server.add("/hop2", status=302, headers={"Location": "/target"})
    start = feed_server.add("/hop1", status=301, headers={"Location": feed_server.url("/hop2")})
    response = fetcher.get(start)
    assert response.status == 200 and response.url == target

    feed_server.add("/to-file", status=302, headers={"Location": "file:///etc/passwd"})
    via = feed_server.add("/via", status=307, headers={"Location": "/to-file"})
    with pytest.raises(FatalSourceError, match=r"refused to fetch 'file:///etc/passwd'.*redirected from"):
        fetcher.get(via)
    feed_server.add("/to-ftp", status=308, headers={"Location": "ftp://example.com/feed"})
    with pytest.raises(FatalSourceError, match="only http and https"):
        fetcher.get(feed_server.url("/to-ftp"))

    loop = feed_server.add("/loop", status=302, headers={"Location": "/loop"})
    with pytest.raises(FatalSourceError, match=r"too many redirects \(more than 3\)"):
        fetcher.get(loop)
    assert len(feed_server.hits_for("/loop")) == 4  # the first request and 3 redirects, no more


def test_a_url_that_is_not_http_is_refused_before_any_request(fetcher: Fetcher) -> None:
    with pytest.raises(FatalSourceError, match="only http and https"):
        fetcher.get("file:///etc/passwd")


def test_bodies_over_the_cap_are_refused_whether_declared_streamed_or_compressed(
    feed_server: FeedServer, fetcher: Fetcher
) -> None:
    big = b"<rss>" + b"x" * 6000
    declared = feed_server.add("/declared", big)
    streamed = feed_server.add("/streamed", handler=_reply(big, length=False))  # no Content-Length
    bomb = gzip.compress(b" " * 50_000_000)  # 50 MB of spaces in about 50 KB
    assert len(bomb) < 100_000
    gzipped = feed_server.add("/bomb", handler=_reply(bomb, headers={"Content-Encoding": "gzip"}))
    deflated = feed_server.add(
        "/deflate-bomb",
        handler=_reply(zlib.compress(b" " * 5_000_000), headers={"Content-Encoding": "deflate"}),
    )
    for url in (declared, streamed, gzipped, deflated):
        with pytest.raises(FatalSourceError, match="larger than the 5000-byte cap"):
            fetcher.get(url)


def test_gzip_and_deflate_bodies_are_decoded_under_the_cap(feed_server: FeedServer, fetcher: Fetcher) -> None:
    body = b"<rss>" + b"a" * 4000 + b"</rss>"
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    encodings = {
        "gzip": gzip.compress(body),
        "deflate": zlib.compress(body),
        "deflate-raw": raw_deflate.compress(body) + raw_deflate.flush(),  # "deflate" without zlib's header
    }
    for name, encoded in encodings.items():
        encoding = name.removesuffix("-raw")
        url = feed_server.add(f"/{name}", handler=_reply(encoded, headers={"Content-Encoding": encoding}))
        assert fetcher.get(url).body == body, name
    broken = feed_server.add(
        "/broken", handler=_reply(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    )
    with pytest.raises(RetriableSourceError, match="could not decode the response from"):
        fetcher.get(broken)
    brotli = feed_server.add("/br", handler=_reply(b"\x0b\x02", headers={"Content-Encoding": "br"}))
    with pytest.raises(RetriableSourceError, match="unsupported Content-Encoding 'br'"):
        fetcher.get(brotli)


def test_bodies_of_errors_redirects_and_304s_are_not_read(feed_server: FeedServer, fetcher: Fetcher) -> None:
    huge = b"x" * 100_000  # over the cap: reading it would fail
    for status in (304, 404, 500, 503):
        url = feed_server.add(f"/s{status}", handler=_reply(huge if status != 304 else b"", status=status))
        response = fetcher.get(url)
        assert response.status == status and response.body == b""
    redirect = feed_server.add("/r", handler=_reply(huge, status=302, headers={"Location": "/s404"}))
    assert fetcher.get(redirect).status == 404


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        (_sleeping(3), "slow headers"),
        (_stalling_body, "body that stalls"),
    ],
)
def test_one_deadline_covers_the_whole_request(
    feed_server: FeedServer, handler: Callable[[BaseHTTPRequestHandler], None], kind: str
) -> None:
    fetcher = Fetcher(timeout=0.5)
    url = feed_server.add("/slow?token=S3CR3T", handler=handler)
    started = time.monotonic()
    try:
        with pytest.raises(
            RetriableSourceError, match=r"timed out after 0\.5s fetching .*token=\*\*\*"
        ) as caught:
            fetcher.get(url)
    finally:
        fetcher.close()
    assert time.monotonic() - started < 2, kind
    assert "S3CR3T" not in str(caught.value)


def test_the_deadline_spans_redirect_hops(feed_server: FeedServer) -> None:
    fetcher = Fetcher(timeout=0.8)

    def slow_redirect(request: BaseHTTPRequestHandler) -> None:
        time.sleep(0.3)
        request.send_response(302)
        request.send_header("Location", "/hop")
        request.send_header("Content-Length", "0")
        request.end_headers()

    url = feed_server.add("/hop", handler=slow_redirect)
    try:
        with pytest.raises(RetriableSourceError, match=r"timed out after 0\.8s"):
            fetcher.get(url)
    finally:
        fetcher.close()
    assert len(feed_server.hits_for("/hop")) <= 3  # each hop took 0.3 s of the same 0.8 s


def test_network_errors_are_retriable_and_name_the_redacted_url(
    feed_server: FeedServer, fetcher: Fetcher
) -> None:
    url = feed_server.add("/reset?api_key=S3CR3T", handler=_reset)
    with pytest.raises(RetriableSourceError, match=r"network error fetching .*api_key=\*\*\*") as caught:
        fetcher.get(url)
    assert "S3CR3T" not in str(caught.value)
    with pytest.raises(RetriableSourceError, match=r"^network error fetching http://127\.0\.0\.1:9/"):
        fetcher.get("http://127.0.0.1:9/feed")  # nothing listens on the discard port


def test_an_invalid_url_is_fatal(fetcher: Fetcher) -> None:
    with pytest.raises(FatalSourceError, match="invalid URL"):
        fetcher.get("http://[::1/feed")


# --- many requests at once --------------------------------------------------------------------


def test_get_many_answers_in_order_each_with_its_own_outcome(
    feed_server: FeedServer, fetcher: Fetcher
) -> None:
    """A failure, a timeout or a huge body in one request is that request's outcome only."""
    plan: list[tuple[str, type[Exception] | int]] = []
    for n in range(30):
        if n == 3:
            plan.append((feed_server.add(f"/f{n}", status=404), 404))
        elif n == 7:
            plan.append((feed_server.add(f"/f{n}", handler=_sleeping(3)), RetriableSourceError))
        elif n == 11:
            plan.append((feed_server.add(f"/f{n}", handler=_reset), RetriableSourceError))
        elif n == 13:
            plan.append((feed_server.add(f"/f{n}", b"x" * 6000), FatalSourceError))
        elif n == 17:
            plan.append(
                (feed_server.add(f"/f{n}", status=302, headers={"Location": "file:///x"}), FatalSourceError)
            )
        else:
            plan.append(
                (feed_server.add(f"/f{n}", handler=_sleeping(0.05 * (n % 4), f"body {n}".encode())), 200)
            )
    started = time.monotonic()
    outcomes = list(fetcher.get_many([(url, {}) for url, _ in plan]))
    elapsed = time.monotonic() - started
    assert len(outcomes) == len(plan)
    for n, ((url, expected), outcome) in enumerate(zip(plan, outcomes, strict=True)):
        if isinstance(expected, int):
            assert isinstance(outcome, Response) and outcome.status == expected and outcome.url == url, n
            if expected == 200:
                assert outcome.body == f"body {n}".encode()
        else:
            assert isinstance(outcome, expected) and redact_url(url) in str(outcome), (n, outcome)
    assert elapsed < 2.5  # the slow one (1 s deadline) held nobody back


def test_get_many_runs_requests_concurrently_within_the_per_host_and_total_limits() -> None:
    lock = threading.Lock()
    in_flight: dict[str, int] = {"a": 0, "b": 0, "all": 0}
    most: dict[str, int] = {"a": 0, "b": 0, "all": 0}

    def counted(name: str) -> Callable[[BaseHTTPRequestHandler], None]:
        reply = _reply(b"ok")

        def handler(request: BaseHTTPRequestHandler) -> None:
            with lock:
                for key in (name, "all"):
                    in_flight[key] += 1
                    most[key] = max(most[key], in_flight[key])
            time.sleep(0.1)
            with lock:
                for key in (name, "all"):
                    in_flight[key] -= 1
            reply(request)

        return handler

    fetcher = Fetcher(timeout=5, max_connections=3, per_host=2)
    with FeedServer() as a, FeedServer() as b:  # two hosts (two ports)
        urls = [a.add(f"/{n}", handler=counted("a")) for n in range(8)]
        urls += [b.add(f"/{n}", handler=counted("b")) for n in range(8)]
        try:
            outcomes = list(fetcher.get_many([(url, {}) for url in urls]))
        finally:
            fetcher.close()
    assert all(isinstance(o, Response) and o.status == 200 for o in outcomes)
    assert most["a"] == 2 and most["b"] <= 2 and most["all"] == 3


def test_a_request_waiting_for_its_turn_is_not_timed_out_by_the_wait(feed_server: FeedServer) -> None:
    fetcher = Fetcher(timeout=0.5, per_host=1)
    urls = [feed_server.add(f"/{n}", handler=_sleeping(0.2)) for n in range(6)]  # 1.2 s in all
    try:
        outcomes = list(fetcher.get_many([(url, {}) for url in urls]))
    finally:
        fetcher.close()
    assert all(isinstance(o, Response) and o.status == 200 for o in outcomes)


def test_get_many_fetches_at_most_ahead_of_its_caller(feed_server: FeedServer, fetcher: Fetcher) -> None:
    urls = [feed_server.add(f"/{n}", f"body {n}") for n in range(40)]
    outcomes = fetcher.get_many([(url, {}) for url in urls], ahead=4)
    first = next(outcomes)
    time.sleep(0.3)
    assert isinstance(first, Response) and first.body == b"body 0"
    assert len(feed_server.hits) <= 4  # the caller holds the rest back
    rest = list(outcomes)
    assert [o.body for o in rest if isinstance(o, Response)] == [f"body {n}".encode() for n in range(1, 40)]


def test_closing_get_many_early_cancels_what_is_in_flight(feed_server: FeedServer, fetcher: Fetcher) -> None:
    fast = feed_server.add("/fast", "ok")
    slow = [feed_server.add(f"/slow{n}", handler=_sleeping(0.6)) for n in range(10)]
    outcomes = fetcher.get_many([(fast, {}), *((url, {}) for url in slow)])
    assert isinstance(next(outcomes), Response)
    started = time.monotonic()
    outcomes.close()
    assert time.monotonic() - started < 0.3
    assert fetcher.get(fast).status == 200  # the client goes on


def test_closing_the_fetcher_interrupts_a_caller_waiting_on_get_many(feed_server: FeedServer) -> None:
    fetcher = Fetcher(timeout=10)
    urls = [feed_server.add(f"/{n}", handler=_sleeping(3)) for n in range(3)]
    outcomes: list[Response | Exception] = []
    reader = threading.Thread(target=lambda: outcomes.extend(fetcher.get_many([(u, {}) for u in urls])))
    reader.start()
    time.sleep(0.3)
    fetcher.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert len(outcomes) == 3
    assert all(isinstance(o, RetriableSourceError) and "interrupted" in str(o) for o in outcomes)
    url = feed_server.add("/after", "ok")
    try:
        assert fetcher.get(url).status == 200  # a later request starts the client again
    finally:
        fetcher.close()


def test_get_is_safe_from_many_threads_at_once(feed_server: FeedServer, fetcher: Fetcher) -> None:
    urls = [feed_server.add(f"/{n}", f"body {n}") for n in range(24)]
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            results[n] = fetcher.get(urls[n]).body
        except SourceError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors and results == {n: f"body {n}".encode() for n in range(len(urls))}


def test_requests_to_one_host_reuse_their_kept_alive_connections(feed_server: FeedServer) -> None:
    """Forty requests to one host, four at a time: four connections, not one per request."""
    ports: set[int] = set()
    reply = _reply(b"ok")

    def handler(request: BaseHTTPRequestHandler) -> None:
        ports.add(request.client_address[1])
        reply(request)

    urls = [feed_server.add(f"/{n}", handler=handler) for n in range(40)]
    fetcher = Fetcher(timeout=5, per_host=4)
    try:
        for _ in range(2):
            outcomes = list(fetcher.get_many([(url, {}) for url in urls]))
            assert all(isinstance(o, Response) and o.status == 200 for o in outcomes)
    finally:
        fetcher.close()
    assert 1 <= len(ports) <= 4


def test_a_lowered_timeout_applies_to_requests_started_after_it(feed_server: FeedServer) -> None:
    """Deadlines are kept in the order they fall due, even when a later one falls due sooner."""
    slow = feed_server.add("/slow", handler=_sleeping(1.5))
    fetcher = Fetcher(timeout=10)
    try:
        results: list[Response | Exception] = []
        early = fetcher.get_many([(slow, {})])  # deadline in 10 s: answers once the server does
        reader = threading.Thread(target=lambda: results.append(next(early)))
        reader.start()
        time.sleep(0.2)
        fetcher.timeout = 0.3
        with pytest.raises(RetriableSourceError, match=r"timed out after 0\.3s"):
            fetcher.get(feed_server.add("/slower", handler=_sleeping(3)))
        reader.join(timeout=10)
        early.close()
        assert isinstance(results[0], Response) and results[0].status == 200
    finally:
        fetcher.close()


def test_many_timeouts_each_cancel_only_their_own_request(feed_server: FeedServer) -> None:
    """One timer serves every deadline: each slow request times out, each fast one answers."""
    fetcher = Fetcher(timeout=0.4, per_host=16, max_connections=16)
    plan = [
        feed_server.add(f"/m{n}", handler=_sleeping(2 if n % 3 == 0 else 0.01, f"body {n}".encode()))
        for n in range(24)
    ]
    try:
        outcomes = list(fetcher.get_many([(url, {}) for url in plan]))
        again = fetcher.get(plan[1])  # the client goes on
    finally:
        fetcher.close()
    for n, outcome in enumerate(outcomes):
        if n % 3 == 0:
            assert isinstance(outcome, RetriableSourceError) and "timed out after 0.4s" in str(outcome), n
        else:
            assert isinstance(outcome, Response) and outcome.body == f"body {n}".encode(), n
    assert again.body == b"body 1"


def test_a_slot_handed_to_a_request_cancelled_meanwhile_goes_to_the_next_one() -> None:
    from monitor.http import _Slots

    async def scenario() -> None:
        slots = _Slots(1)
        assert slots.take() and not slots.take()
        first = asyncio.create_task(slots.wait())
        second = asyncio.create_task(slots.wait())
        await asyncio.sleep(0)  # both wait
        slots.give()  # the slot goes to the first...
        first.cancel()  # ... cancelled before it could use it
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)  # so the second has it
        assert slots.free == 0
        slots.give()
        assert slots.free == 1

    asyncio.run(scenario())


def test_tls_certificates_are_verified(tmp_path: Path, fetcher: Fetcher) -> None:
    """A server whose certificate no known authority signed is refused, as a network error."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with contextlib.suppress(OSError):  # the client hangs up on the certificate
            context.wrap_socket(connection, server_side=True).close()
        connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(
            RetriableSourceError, match=r"network error fetching https://127\.0\.0\.1:.*certificate"
        ):
            fetcher.get(f"https://127.0.0.1:{port}/feed")
    finally:
        thread.join(timeout=5)
        listener.close()
