"""The one HTTP client every network source uses: bounded in time, size, redirects and connections.

Every request, `get` or `get_many`, goes through `Fetcher._get`, so these hold for all of them:

- only http and https are fetched, and every redirect hop is checked again (at most
  `max_redirects` of them);
- one deadline (`timeout`) covers the whole request: connecting, every redirect hop, headers
  and body;
- the body is read with a hard cap (`max_bytes`) on what arrives and, for gzip and deflate
  (decoded here, not by the library), on what it decodes to: a huge, endless or compressed-bomb
  response cannot exhaust memory;
- bodies of redirects, 304s and error responses are not read;
- failures are `RetriableSourceError` or `FatalSourceError` naming the redacted URL and why;
- TLS certificates verified against certifi's CA bundle;
- the project's User-Agent; no proxy from the environment, no cookies kept between requests.

The client is aiohttp (its HTTP parser is C), on an event loop in a thread of the Fetcher's own,
so a request costs little and many wait on the network at once in one thread. Callers stay
synchronous: `get` waits for one response (a source's own requests, e.g. Hacker News pages);
`get_many` takes many and yields their outcomes in order (RSS: every feed of a source). At most
`max_connections` requests are in flight per Fetcher (one per source), at most `per_host` of them
to the same host (scheme, host and port of the URL asked for; redirect hops ride on the turn of
the URL asked for); a request's deadline starts when it gets its turn, not while it waits for one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import re
import ssl
import threading
import zlib
from collections import deque
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import certifi
import yarl

from monitor import USER_AGENT
from monitor.errors import FatalSourceError, RetriableSourceError, SourceError

_SECRET_PARAM = re.compile(
    r"(?i)(?<![^&;])((?:api_?|access_)?key|[a-z_]*token|secret|password|passwd|sig|signature|auth)=[^&;]*"
)
_REDIRECTS = (301, 302, 303, 307, 308)
AHEAD = 256  # requests of `get_many` started ahead of the one its caller is taking, at most
_CREDIT_BATCH = 16  # window slots handed back to the loop at a time (one wake-up, not sixteen)
MAX_CONNECTIONS = 32  # requests in flight at once per Fetcher (one per source)
PER_HOST = 8  # ... and to one host: polite to a site that serves many of the feeds


def _interrupted(url: str, runner: concurrent.futures.Future[None]) -> Exception:
    if runner.cancelled() or runner.exception() is None:
        return RetriableSourceError(f"fetching {redact_url(url)} was interrupted: the HTTP client was closed")
    error = runner.exception()
    return error if isinstance(error, Exception) else RuntimeError(repr(error))


@lru_cache(maxsize=4096)
def _host_key(url: str) -> str:
    """Who a request is polite to: scheme, host and port."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}".lower()
    except ValueError:
        return ""


@lru_cache(maxsize=4096)
def _parsed(url: str) -> yarl.URL:
    """The URL as aiohttp would parse it, parsed once per feed rather than once per request."""
    return yarl.URL(url)


class _Slots:
    """A counting semaphore used on the loop's thread only: a free slot is taken without waiting
    (asyncio's costs about as much as the rest of our own code per request). First come, first served."""

    __slots__ = ("_waiters", "free")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a free slot if there is one and nobody waits for it; else `wait` for one."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot while being cancelled
                self.give()
            raise

    def give(self, count: int = 1) -> None:
        for _ in range(count):
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot goes straight to the first one waiting
                    break
            else:
                self.free += 1


class _Deadline:
    """One request's deadline (see `_Deadlines`)."""

    __slots__ = ("expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[object] | None) -> None:
        self.when = when
        self.task = task  # None once the request has ended
        self.expired = False


class _Deadlines:
    """The deadlines of a Fetcher's requests, on one timer of the loop rather than one each.

    Every request of a Fetcher has the same timeout, so they expire in the order they started:
    a queue in that order and one timer set for its oldest live deadline do what an
    `asyncio.timeout` per request does (cancel the task when its time is up) without a timer
    handle made, scheduled, cancelled and swept from the loop's heap for every request.
    """

    __slots__ = ("_loop", "_queue", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[_Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None  # set for the oldest deadline not yet ended

    def start(self, seconds: float, task: asyncio.Task[object]) -> _Deadline:
        deadline = _Deadline(self._loop.time() + seconds, task)
        queue = self._queue
        if queue and queue[-1].when > deadline.when:  # the timeout was lowered meanwhile: keep the order
            queue.append(deadline)
            self._queue = deque(sorted(queue, key=lambda entry: entry.when))
            self._arm()
            return deadline
        queue.append(deadline)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline.when, self._expire, deadline.when)
        return deadline

    def end(self, deadline: _Deadline) -> None:
        deadline.task = None
        queue = self._queue
        while queue and queue[0].task is None:  # in the usual order, the queue stays short
            queue.popleft()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0].when, self._expire, self._queue[0].when)

    def _expire(self, due: float) -> None:
        """Cancel the requests whose time is up (the loop may call this a hair before `due`)."""
        self._timer = None
        queue, now = self._queue, max(self._loop.time(), due)
        while queue:
            deadline = queue[0]
            if deadline.task is not None:
                if deadline.when > now:
                    self._timer = self._loop.call_at(deadline.when, self._expire, deadline.when)
                    return
                deadline.expired = True
                deadline.task.cancel()
            queue.popleft()


class _Handover:
    """The outcomes of one `get_many`, from the loop to the caller's thread: those that ended in
    the same turn of the loop go over together, so the caller is woken once for them, not once each."""

    __slots__ = ("_loop", "_ready", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: list[tuple[int, Response | Exception]] = []
        self.queue: queue.SimpleQueue[list[tuple[int, Response | Exception]]] = queue.SimpleQueue()

    def put(self, index: int, outcome: Response | Exception) -> None:
        if not self._ready:
            self._loop.call_soon(self.flush)
        self._ready.append((index, outcome))

    def flush(self) -> None:
        if self._ready:
            self.queue.put(self._ready)
            self._ready = []


def redact_url(url: str) -> str:
    """The URL as it may appear in logs and errors: no password, no token-like query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(slots=True)
class Response:
    url: str  # the URL that answered, after redirects
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes  # empty unless the status is 2xx


class _Decoder:
    """Content-Encoding decoding under a cap: never more output than the room left (+1, to tell)."""

    def __init__(self, encoding: str, shown: str) -> None:
        self.encoding = encoding
        self.shown = shown
        if encoding == "gzip" or encoding == "x-gzip":
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
        else:
            raise RetriableSourceError(
                f"could not decode the response from {shown}: unsupported Content-Encoding {encoding!r}"
            )
        self._started = False

    def decode(self, data: bytes, room: int) -> bytes:
        try:
            out = self._zlib.decompress(data, room)
        except zlib.error as exc:
            if self.encoding != "deflate" or self._started:
                raise RetriableSourceError(f"could not decode the response from {self.shown}: {exc}") from exc
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # "deflate" sent without its zlib header
            return self.decode(data, room)
        self._started = True
        return out

    def flush(self) -> bytes:
        return self._zlib.flush() if not self._zlib.unconsumed_tail else b""


class Fetcher:
    """GET with one deadline, a size cap, capped and checked redirects, and a project User-Agent.

    Thread-safe: `get` and `get_many` may be called from any thread but the Fetcher's own.
    `close` cancels what is still in flight and stops the thread (a later request starts it again).
    """

    def __init__(
        self,
        *,
        timeout: float = 20.0,
        max_bytes: int = 10_000_000,
        max_redirects: int = 5,
        max_connections: int = MAX_CONNECTIONS,
        per_host: int = PER_HOST,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.max_connections = max_connections
        self.per_host = min(per_host, max_connections)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Made and used on the loop's thread only.
        self._session: aiohttp.ClientSession | None = None
        self._slots: _Slots | None = None
        self._deadlines: _Deadlines | None = None
        self._hosts: dict[str, _Slots] = {}

    def get(self, url: str, headers: dict[str, str] | None = None) -> Response:
        """Fetch `url`; raise a SourceError that names the URL and the reason on any failure."""
        outcomes = self.get_many([(url, headers or {})])
        try:
            outcome = next(outcomes)
        finally:
            outcomes.close()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def get_many(
        self, requests: Iterable[tuple[str, dict[str, str]]], *, ahead: int = AHEAD
    ) -> Generator[Response | Exception, None, None]:
        """Fetch many `(url, headers)` at once; yield each outcome in the order asked: the
        Response, or the error (a SourceError, as `get` raises) that fetching it ended with.

        At most `ahead` requests are started before the caller has taken the one before them,
        so what waits in memory stays bounded however many are asked. Closing the generator
        cancels what is still in flight.
        """
        items = [(url, dict(headers)) for url, headers in requests]
        if not items:
            return
        loop = self._running_loop()
        handover = _Handover(loop)
        window = _Slots(min(ahead, len(items)))  # used on the loop only
        batch = min(_CREDIT_BATCH, ahead)
        runner = asyncio.run_coroutine_threadsafe(self._run_many(items, handover, window), loop)
        waiting: dict[int, Response | Exception] = {}
        taken = returned = 0
        try:
            for index in range(len(items)):
                while index not in waiting:
                    stopped = runner.done()  # then all it will ever answer is queued already
                    try:
                        waiting.update(handover.queue.get(block=not stopped, timeout=1.0))
                    except queue.Empty:
                        if not stopped:
                            continue
                        # No answer for this one: the Fetcher was closed meanwhile.
                        waiting[index] = _interrupted(items[index][0], runner)
                outcome = waiting.pop(index)
                taken += 1
                if taken - returned >= batch:  # let the loop start as many more
                    loop.call_soon_threadsafe(window.give, taken - returned)
                    returned = taken
                yield outcome
        finally:
            runner.cancel()

    async def _run_many(
        self, items: list[tuple[str, dict[str, str]]], handover: _Handover, window: _Slots
    ) -> None:
        """Start each request, in order, once the window allows it; hand every outcome over.

        The requests to a host queue in a lane of their own, which up to `per_host` tasks
        take them from one after another: no task is made per request, and none waits for the
        host's turn while holding a request another host could have started.
        """
        lanes: dict[str, deque[tuple[int, str, dict[str, str]]]] = {}
        busy: dict[str, int] = {}  # tasks taking from each lane
        running: set[asyncio.Task[None]] = set()

        async def work(host: str, lane: deque[tuple[int, str, dict[str, str]]]) -> None:
            try:
                while lane:
                    index, url, headers = lane.popleft()
                    try:
                        outcome: Response | Exception = await self._get(url, headers)
                    except Exception as exc:  # noqa: BLE001 - handed to the caller, in its place
                        outcome = exc
                    handover.put(index, outcome)
            finally:
                busy[host] -= 1

        try:
            for index, (url, headers) in enumerate(items):
                if not window.take():
                    await window.wait()  # given back by the caller as it takes the outcomes
                host = _host_key(url)
                lane = lanes.get(host)
                if lane is None:
                    lane = lanes[host] = deque()
                    busy[host] = 0
                lane.append((index, url, headers))
                if busy[host] < self.per_host:
                    busy[host] += 1
                    task = asyncio.create_task(work(host, lane))
                    running.add(task)
                    task.add_done_callback(running.discard)
            while running:
                await asyncio.wait(list(running))
        finally:
            for task in running:
                task.cancel()
            handover.flush()  # before this task is seen done: all it answered is then queued

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="http", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._session, self._slots, self._deadlines, self._hosts = None, None, None, {}
        await asyncio.get_running_loop().shutdown_default_executor()  # DNS lookups run there

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections,
                    limit_per_host=0,  # ours, before the deadline starts
                    ssl=ssl.create_default_context(cafile=certifi.where()),  # Mozilla's CAs, as httpx had
                ),
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
                timeout=aiohttp.ClientTimeout(total=None),  # our own deadline covers every hop
                auto_decompress=False,  # decoded here, under the size cap
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
            self._slots = _Slots(self.max_connections)
            self._deadlines = _Deadlines(asyncio.get_running_loop())
        return self._session

    def _host_slots(self, url: str) -> _Slots:
        host = _host_key(url)
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = _Slots(self.per_host)
        return slots

    async def _get(self, url: str, headers: dict[str, str]) -> Response:
        session = self._open()
        slots, deadlines = self._slots, self._deadlines
        assert slots is not None and deadlines is not None
        # A turn per host first, then one of all: a busy host cannot hold every slot. The
        # deadline starts once the request has its turn.
        host = self._host_slots(url)
        if not host.take():
            await host.wait()
        try:
            if not slots.take():
                await slots.wait()
            try:
                return await self._get_within(session, deadlines, url, headers)
            finally:
                slots.give()
        finally:
            host.give()

    async def _get_within(
        self, session: aiohttp.ClientSession, deadlines: _Deadlines, url: str, headers: dict[str, str]
    ) -> Response:
        """The request and its redirect hops, within one deadline (`timeout`)."""
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        current = url
        deadline = deadlines.start(self.timeout, task)
        try:
            try:
                for _hop in range(self.max_redirects + 1):
                    if not current.startswith(("http://", "https://")) and urlsplit(
                        current
                    ).scheme.lower() not in ("http", "https"):
                        raise FatalSourceError(
                            f"refused to fetch {redact_url(current)!r}: only http and https are allowed"
                            + (f" (redirected from {redact_url(url)})" if current != url else "")
                        )
                    response = await self._get_once(session, current, headers)
                    if response.status in _REDIRECTS and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    return response
            except asyncio.CancelledError as exc:
                # As `asyncio.timeout` does: the deadline's cancellation, unless someone else's came too.
                if not deadline.expired:
                    raise
                deadline.expired = False  # uncancelled here, once
                if task.uncancel() > cancelling:
                    raise
                raise TimeoutError from exc
            finally:
                deadlines.end(deadline)
                if deadline.expired:  # the deadline cancelled the task as the request ended otherwise
                    task.uncancel()
        except TimeoutError as exc:
            raise RetriableSourceError(
                f"timed out after {self.timeout:g}s fetching {redact_url(current)}"
            ) from exc
        raise FatalSourceError(f"too many redirects (more than {self.max_redirects}) from {redact_url(url)}")

    async def _get_once(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Response:
        try:
            target = _parsed(url)
        except ValueError as exc:
            raise FatalSourceError(f"invalid URL {redact_url(url)}: {exc}") from exc
        try:
            async with session.get(target, headers=headers, allow_redirects=False) as response:
                body = await self._read(response, url) if 200 <= response.status < 300 else b""
                # Leaving unread a body (an error page, a redirect's) closes the connection.
                return Response(url, response.status, response.headers, body)
        except SourceError:
            raise
        except aiohttp.InvalidURL as exc:
            raise FatalSourceError(f"invalid URL {redact_url(url)}: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise  # the deadline's: reported as a timeout by the caller
            reason = str(exc) or type(exc).__name__
            raise RetriableSourceError(f"network error fetching {redact_url(url)}: {reason}") from exc

    async def _read(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        decoder = None if encoding in ("", "identity") else _Decoder(encoding, redact_url(url))
        limit = self.max_bytes
        if response.content_length is not None and response.content_length > limit:
            raise self._too_large(url)
        chunks: list[bytes] = []
        received = size = 0
        async for data in response.content.iter_any():
            received += len(data)
            if decoder is not None:
                data = decoder.decode(data, limit - size + 1)
            size += len(data)
            if size > limit or received > limit:
                raise self._too_large(url)
            chunks.append(data)
        if decoder is not None:
            tail = decoder.flush()
            size += len(tail)
            if size > limit:
                raise self._too_large(url)
            chunks.append(tail)
        return b"".join(chunks)

    def _too_large(self, url: str) -> FatalSourceError:
        return FatalSourceError(
            f"response from {redact_url(url)} is larger than the {self.max_bytes}-byte cap "
            "(raise max_bytes for this source if the feed is really that big)"
        )


def raise_for_status(response: Response) -> None:
    """Map HTTP failures to source errors: 4xx needs a human, 5xx/408/429 will be retried."""
    status = response.status
    if status < 400:
        return
    shown = redact_url(response.url)
    if status in (408, 425, 429) or status >= 500:
        raise RetriableSourceError(f"HTTP {status} from {shown} (server error; will retry)")
    raise FatalSourceError(f"HTTP {status} from {shown} (check the URL and access rights)")
