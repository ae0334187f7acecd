"""The local feed server the tests and `monitor demo` use: conditional GETs, and requests read
as http.server reads them (its own parser for anything but a plain HTTP/1.x request line)."""

from __future__ import annotations

import socket
import urllib.request

from monitor.feedserver import FeedServer


def _exchange(server: FeedServer, raw: bytes) -> bytes:
    host, port = server.url("/").split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_every_header_is_read_and_a_conditional_get_gets_a_304(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed", "<rss/>")
    etag = feed_server.routes["/feed"].etag
    reply = _exchange(
        feed_server,
        b"GET /feed HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\nif-none-match: "
        + etag.encode()
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 304 ")
    (hit,) = feed_server.hits_for("/feed")
    assert hit.status == 304 and hit.headers["X-Folded"] == "one two" and hit.headers["Host"] == "x"
    with urllib.request.urlopen(url, timeout=5) as response:  # HTTP/1.1 with Connection: close
        assert response.status == 200 and response.read() == b"<rss/>"


def test_keep_alive_serves_several_requests_on_one_connection(feed_server: FeedServer) -> None:
    feed_server.add("/a", "A")
    feed_server.add("/b", "B")
    reply = _exchange(feed_server, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET //b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 ") == 2 and reply.endswith(b"B")
    reply = _exchange(feed_server, b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 ") == 1  # HTTP/1.0 closes after one request


def test_other_request_lines_and_oversized_headers_are_refused_as_http_server_does(
    feed_server: FeedServer,
) -> None:
    feed_server.add("/a", "A")
    assert b"Error code: 505" in _exchange(feed_server, b"GET /a HTTP/2.0\r\n\r\n")
    assert _exchange(feed_server, b"GET /a b HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    too_long = b"GET /a HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n"
    assert _exchange(feed_server, too_long).startswith(b"HTTP/1.1 431 ")
    too_many = b"GET /a HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(101)) + b"\r\n"
    assert _exchange(feed_server, too_many).startswith(b"HTTP/1.1 431 ")


def test_responses_carry_what_http_server_would_send(feed_server: FeedServer) -> None:
    """Status line, Server and Date, then the route's headers in order (repeated ones too), then
    the body: whether http.server's parser read the request (HTTP/1.2) or ours did."""
    feed_server.add("/a", "A", content_type="text/plain", headers={"Content-Type": "text/xml", "X-One": "1"})
    for version in (b"HTTP/1.1", b"HTTP/1.2"):
        reply = _exchange(feed_server, b"GET /a " + version + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK" and body == b"A", version
        names = [line.split(b":", 1)[0] for line in lines[1:]]
        assert names[:2] == [b"Server", b"Date"], version
        assert names[2:] == [
            b"Content-Type",
            b"Content-Length",
            b"Content-Type",
            b"X-One",
            b"ETag",
            b"Last-Modified",
        ], version
        assert lines[3:5] == [b"Content-Type: text/plain", b"Content-Length: 1"], version


def test_a_route_that_says_connection_close_closes_it(feed_server: FeedServer) -> None:
    feed_server.add("/a", "A", headers={"Connection": "close"})
    feed_server.add("/b", "B")
    reply = _exchange(feed_server, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 ") == 1 and reply.endswith(b"A")
