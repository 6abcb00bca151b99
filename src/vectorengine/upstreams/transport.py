"""The one small interface the relay uses to reach upstreams, and its pyreqwest implementation.

Tests and benchmarks talk to real local servers through the same transport; nothing in the
relay knows which HTTP client is underneath.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from datetime import timedelta
from typing import Any, Protocol

from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import (
    ConnectError,
    ConnectTimeoutError,
    PyreqwestError,
    RequestTimeoutError,
)

from vectorengine.errors import GatewayError, Kind

Headers = Sequence[tuple[str, str]]


class UpstreamResponse(Protocol):
    status: int
    next_chunk: Callable[[], Awaitable[bytes | memoryview | None]]
    """The next piece of a streamed body as it arrived, or None at its end. This is the
    client's own read (no wrapper: it runs once per chunk); it raises one of ``broken``
    when the upstream connection fails mid-body."""
    broken: tuple[type[BaseException], ...]

    def header(self, name: str) -> str | None: ...

    async def read(self) -> bytes | memoryview:
        """The whole (rest of the) body."""
        ...


class Transport(Protocol):
    """``connect_s`` bounds the connection set-up and ``total_s`` the whole exchange; None takes
    the transport's defaults. Waiting for the first byte is bounded by the caller."""

    async def send(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        *,
        connect_s: float | None = None,
        total_s: float | None = None,
    ) -> UpstreamResponse:
        """Send a request and read the whole response body."""
        ...

    def open(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        *,
        connect_s: float | None = None,
        total_s: float | None = None,
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """Send a request; the response body is read incrementally inside the context."""
        ...

    async def close(self) -> None: ...


def _map_error(exc: PyreqwestError) -> GatewayError:
    if isinstance(exc, ConnectTimeoutError | ConnectError):
        return GatewayError(
            Kind.UPSTREAM_UNREACHABLE, f"could not connect to the upstream: {type(exc).__name__}"
        )
    if isinstance(exc, RequestTimeoutError):
        return GatewayError(Kind.UPSTREAM_TIMEOUT, "the upstream did not answer in time")
    return GatewayError(Kind.UPSTREAM_BAD_RESPONSE, f"upstream transport error: {type(exc).__name__}")


class _PyreqwestResponse:
    """An upstream response; ``body`` is given when the client already read it in full."""

    __slots__ = ("_body", "_resp", "next_chunk", "status")
    broken: tuple[type[BaseException], ...] = (PyreqwestError,)

    def __init__(self, resp: Any, body: Any = None) -> None:
        self._resp = resp
        self._body: Any = body
        self.status: int = resp.status
        self.next_chunk: Callable[[], Awaitable[Any]] = (
            resp.body_reader.read_chunk if body is None else _no_more_chunks
        )

    def header(self, name: str) -> str | None:
        value = self._resp.get_header(name)
        return None if value is None else str(value)

    async def read(self) -> memoryview:
        if self._body is not None:
            return memoryview(self._body)
        try:
            return memoryview(await self._resp.bytes())
        except PyreqwestError as exc:
            raise GatewayError(
                Kind.UPSTREAM_STREAM_BROKEN, f"upstream body read failed: {type(exc).__name__}"
            ) from exc


async def _no_more_chunks() -> None:
    return None


class _Exchange:
    """Async context manager around one streamed pyreqwest request."""

    __slots__ = ("_cm",)

    def __init__(self, cm: Any) -> None:
        self._cm = cm

    async def __aenter__(self) -> _PyreqwestResponse:
        try:
            resp = await self._cm.__aenter__()
        except PyreqwestError as exc:
            raise _map_error(exc) from exc
        return _PyreqwestResponse(resp)

    async def __aexit__(self, *exc: object) -> None:
        with suppress(PyreqwestError):
            await self._cm.__aexit__(*exc)


class PyreqwestTransport:
    """Pooled keep-alive connections (HTTP/1.1, and HTTP/2 where the upstream offers it).

    pyreqwest sets the connect timeout per client, so there is one client (and pool) per
    distinct connect timeout in use; most deployments have one.
    """

    def __init__(
        self, *, connect_timeout_s: float = 10.0, timeout_s: float = 600.0, max_connections: int | None = None
    ) -> None:
        self._connect_s = connect_timeout_s
        self._total_s = timeout_s
        self._max_connections = max_connections
        self._clients: dict[float, Any] = {connect_timeout_s: self._build(connect_timeout_s)}
        self._totals: dict[float, timedelta] = {}

    def _build(self, connect_s: float) -> Any:
        builder = (
            ClientBuilder()
            .connect_timeout(timedelta(seconds=connect_s))
            .timeout(timedelta(seconds=self._total_s))
            .pool_idle_timeout(timedelta(seconds=90))
            .tcp_nodelay(True)
            .follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .no_proxy()
        )
        if self._max_connections is not None:
            builder = builder.max_connections(self._max_connections)
        return builder.build()

    def _request(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        connect_s: float | None,
        total_s: float | None,
    ) -> Any:
        client = self._clients.get(connect_s or self._connect_s)
        if client is None:
            assert connect_s is not None
            client = self._clients[connect_s] = self._build(connect_s)
        builder = client.request(method, url).headers(headers).body_bytes(body)
        if total_s is not None and total_s != self._total_s:
            total = self._totals.get(total_s)
            if total is None:
                if len(self._totals) > 64:  # values computed from deadlines vary: keep it small
                    self._totals.clear()
                total = self._totals[total_s] = timedelta(seconds=total_s)
            builder = builder.timeout(total)
        return builder

    async def send(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        *,
        connect_s: float | None = None,
        total_s: float | None = None,
    ) -> _PyreqwestResponse:
        req = self._request(method, url, headers, body, connect_s, total_s).build()
        started = time.perf_counter()
        try:
            resp = await req.send()
            return _PyreqwestResponse(resp, await resp.bytes())
        except ConnectTimeoutError as exc:
            # pyreqwest reports the request timeout running out while waiting for the answer
            # as a connect timeout too: tell them apart by the time spent.
            if time.perf_counter() - started >= (total_s or self._total_s) * 0.99:
                raise GatewayError(Kind.UPSTREAM_TIMEOUT, "the upstream did not answer in time") from exc
            raise _map_error(exc) from exc
        except PyreqwestError as exc:
            raise _map_error(exc) from exc

    def open(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        *,
        connect_s: float | None = None,
        total_s: float | None = None,
    ) -> _Exchange:
        req = (
            self._request(method, url, headers, body, connect_s, total_s)
            # Hand every chunk over as soon as it arrives: the default buffers 64 KiB first,
            # which would hold back the first SSE events.
            .streamed_read_buffer_limit(0)
            .build_streamed()
        )
        return _Exchange(req)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
