"""The gateway's HTTP client to function instances: one ``aiohttp.ClientSession`` for every forwarded
call and every readiness probe.

aiohttp rather than httpx on this path: the warm call is one POST to a pod IP and one fully read
answer, and aiohttp does that with a fraction of httpx's per-request Python work (profiling showed
forwarding at ~27% of the gateway's CPU with httpx). The session:

- ``TCPConnector(limit=1000)``: connections kept alive when the instance allows it (gunicorn's sync
  workers close after each answer, so most calls open a connection: there is no DNS to resolve
  for a pod IP, and aiohttp skips its resolver for IP literals);
- ``auto_decompress=False`` and no ``Accept-Encoding`` sent: the body goes back as the instance sent it;
- a total timeout per call (the function's timeout + slack, given by the caller).

Errors are mapped to three exceptions so the gateway does not depend on aiohttp's:
``Unreachable`` (no connection was made: the call never started, so retrying elsewhere is safe),
``ForwardTimeout`` (past the total timeout), ``ForwardError`` (anything else on the way).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

CONNECTION_LIMIT = 1000
KEEPALIVE_TIMEOUT = 15.0
# Headers aiohttp would add on its own that the instance has no use for.
_SKIP_HEADERS = ("Accept-Encoding", "User-Agent")
_CONNECT_TIMEOUT = getattr(aiohttp, "ConnectionTimeoutError", None)


class ForwardError(Exception):
    """The call failed on the way (the instance may have started it)."""


class Unreachable(ForwardError):
    """No connection to the instance could be made: the call did not start."""


class ForwardTimeout(ForwardError):
    """No full answer within the timeout."""


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]


class Forwarder:
    """One session, made on first use inside the running loop; :meth:`close` ends it."""

    def __init__(self, *, limit: int = CONNECTION_LIMIT, keepalive_timeout: float = KEEPALIVE_TIMEOUT) -> None:
        self.limit = limit
        self.keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=0,
                                             keepalive_timeout=self.keepalive_timeout, use_dns_cache=True,
                                             enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=_SKIP_HEADERS, raise_for_status=False)
        return self._session

    async def request(self, method: str, url: str, *, body: bytes | None = None,
                      headers: dict[str, str] | None = None, timeout: float) -> Reply:
        """One call, its answer read fully; raises the errors of the module docstring."""
        try:
            async with self.session.request(method, url, data=body, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=timeout),
                                            allow_redirects=False) as resp:
                data = await resp.read()
                return Reply(resp.status, data, resp.headers)
        except aiohttp.ClientConnectorError as exc:  # refused, no route, DNS: nothing was sent
            raise Unreachable(_reason(exc)) from exc
        except Exception as exc:
            if _CONNECT_TIMEOUT is not None and isinstance(exc, _CONNECT_TIMEOUT):
                raise Unreachable(f"connect timed out after {timeout:g}s") from exc
            if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                raise ForwardTimeout(f"no answer within {timeout:g}s") from exc
            if isinstance(exc, aiohttp.ClientError | OSError):
                raise ForwardError(_reason(exc)) from exc
            raise

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> Reply:
        return await self.request("POST", url, body=body, headers=headers, timeout=timeout)

    async def get(self, url: str, *, timeout: float) -> Reply:
        return await self.request("GET", url, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

