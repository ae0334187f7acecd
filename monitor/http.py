"""The one HTTP client every network source uses: bounded in time, size and redirects.

Only http(s) is ever fetched, every redirect hop is re-checked, and the body is read with a hard
cap so a huge or endless response (or a gzip bomb) cannot exhaust memory.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from monitor import USER_AGENT
from monitor.errors import FatalSourceError, RetriableSourceError

_SECRET_PARAM = re.compile(
    r"(?i)(?<![^&;])((?:api_?|access_)?key|[a-z_]*token|secret|password|passwd|sig|signature|auth)=[^&;]*"
)


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
    url: str
    status: int
    headers: httpx.Headers
    body: bytes


class Fetcher:
    """GET with timeouts, a size cap, capped and checked redirects, and a project User-Agent."""

    def __init__(
        self,
        *,
        timeout: float = 20.0,
        max_bytes: int = 10_000_000,
        max_redirects: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def get(self, url: str, headers: dict[str, str] | None = None) -> Response:
        """Fetch `url`; raise a SourceError that names the URL and the reason on any failure."""
        deadline = time.monotonic() + self.timeout
        current = url
        for _hop in range(self.max_redirects + 1):
            scheme = urlsplit(current).scheme.lower()
            if scheme not in ("http", "https"):
                raise FatalSourceError(
                    f"refused to fetch {redact_url(current)!r}: only http and https are allowed"
                    + (f" (redirected from {redact_url(url)})" if current != url else "")
                )
            response = self._get_once(current, headers or {}, deadline)
            if response.status in (301, 302, 303, 307, 308) and "location" in response.headers:
                current = urljoin(current, response.headers["location"])
                continue
            return response
        raise FatalSourceError(f"too many redirects (more than {self.max_redirects}) from {redact_url(url)}")

    def _get_once(self, url: str, headers: dict[str, str], deadline: float) -> Response:
        shown = redact_url(url)
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                chunks: list[bytes] = []
                size = 0
                if response.status_code < 300:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise FatalSourceError(
                                f"response from {shown} is larger than the {self.max_bytes}-byte cap "
                                "(raise max_bytes for this source if the feed is really that big)"
                            )
                        if time.monotonic() > deadline:
                            raise RetriableSourceError(
                                f"timed out after {self.timeout:g}s reading {shown} (response too slow)"
                            )
                        chunks.append(chunk)
                elif response.headers.get("content-length") in ("0", None) and response.status_code in (
                    304,
                    204,
                ):
                    response.read()  # nothing to read: lets the connection go back to the pool
                return Response(url, response.status_code, response.headers, b"".join(chunks))
        except httpx.TimeoutException as exc:
            raise RetriableSourceError(f"timed out after {self.timeout:g}s fetching {shown}") from exc
        except httpx.DecodingError as exc:
            raise RetriableSourceError(f"could not decode the response from {shown}: {exc}") from exc
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise RetriableSourceError(f"network error fetching {shown}: {reason}") from exc
        except httpx.InvalidURL as exc:
            raise FatalSourceError(f"invalid URL {shown}: {exc}") from exc


def raise_for_status(response: Response) -> None:
    """Map HTTP failures to source errors: 4xx needs a human, 5xx/408/429 will be retried."""
    status = response.status
    if status < 400:
        return
    shown = redact_url(response.url)
    if status in (408, 425, 429) or status >= 500:
        raise RetriableSourceError(f"HTTP {status} from {shown} (server error; will retry)")
    raise FatalSourceError(f"HTTP {status} from {shown} (check the URL and access rights)")
