"""One webhook delivery attempt over a guarded connection: bounded in time, bytes and place.

* **Place**: :class:`GuardedBackend` is the connection pool's network backend. For every new
  connection it resolves the name itself (the operator's resolver, in a thread pool of its own,
  within the attempt's deadline), refuses the connection if any answer is refused by the
  :class:`~.webhook_targets.TargetPolicy`, and connects to the exact address it checked. TLS
  still uses the URL's name for SNI and certificate verification and the request carries it in
  ``Host``, so a DNS answer that changes after the check (rebinding) is never used. No proxy from
  the environment, no Unix sockets, no redirects (httpcore follows none).
* **Time**: one total deadline per attempt (connect, TLS, request, headers and body excerpt),
  not per read: a receiver that drips a byte a second is cut at the deadline.
* **Bytes**: every read of a connection is charged to the attempt that made it; beyond
  ``max_bytes`` (headers and body together) the read fails, so a receiver's endless body or
  endless headers cost the institution at most ``max_bytes`` plus one read buffer.

:func:`attempt` returns an :class:`Attempt` record whatever happens; it raises nothing but
cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ssl
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpcore

from safescan.api.errors import WebhookUrlRefused
from safescan.institution.webhook_targets import IPAddress, TargetPolicy, WebhookTarget

READ_CHUNK = 16 * 1024
EXCERPT_GRACE = 1.0  # seconds to read a body excerpt once the status has arrived


class ResponseTooLarge(Exception):
    """The receiver sent more than the attempt's byte budget."""


class TargetRefusedOnConnect(Exception):
    """The resolver's answer at connection time names a refused address."""


@dataclass
class _Meter:
    """Bytes read and the peer address for the attempt running in this task."""

    budget: int
    received: int = 0
    peer: str | None = None


_METER: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar(
    "safescan_webhook_meter", default=None
)


@dataclass
class Counters:
    """Process-wide transport counters."""

    bytes_received: int = 0
    connections: int = 0
    refused_connections: int = 0


class MeteredStream(httpcore.AsyncNetworkStream):
    """A connection whose reads are charged to the current attempt (and capped by it)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, peer: str, counters: Counters) -> None:
        self.inner, self.peer, self.counters = inner, peer, counters

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        meter = _METER.get()
        ask = min(max_bytes, READ_CHUNK)
        if meter is not None:
            meter.peer = self.peer
            left = meter.budget - meter.received
            if left <= 0:
                raise ResponseTooLarge(f"the response is larger than {meter.budget} bytes")
            ask = min(ask, left)
        data = await self.inner.read(ask, timeout)
        self.counters.bytes_received += len(data)
        if meter is not None:
            meter.received += len(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self.inner.start_tls(ssl_context, server_hostname, timeout)
        return MeteredStream(tls, self.peer, self.counters)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check, then connect to the checked address (see the module docstring)."""

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        counters: Counters | None = None,
        dns_threads: int = 16,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.counters = counters or Counters()
        self.inner = inner or httpcore.AnyIOBackend()
        self._dns = ThreadPoolExecutor(dns_threads, thread_name_prefix="safescan-webhook-dns")

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses of ``host`` now (raises :class:`TargetRefusedOnConnect`)."""
        try:
            target = self.policy.parse(f"https://{host if ':' not in host else f'[{host}]'}/")
        except WebhookUrlRefused as exc:
            raise TargetRefusedOnConnect(exc.message) from None
        try:
            if target.literal is not None:
                answers: Sequence[str] = [str(target.literal)]
            else:
                loop = asyncio.get_running_loop()
                answers = await loop.run_in_executor(self._dns, self.policy.resolver, host, port)
            return self.policy.check_addresses(target, answers)
        except WebhookUrlRefused as exc:
            self.counters.refused_connections += 1
            raise TargetRefusedOnConnect(exc.message) from None
        except (OSError, UnicodeError, ValueError):
            raise httpcore.ConnectError(f"{host} does not resolve") from None

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to the first reachable checked address of ``host``."""
        last: Exception | None = None
        for ip in await self.addresses(host, port):
            try:
                stream = await self.inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self.counters.connections += 1
            return MeteredStream(stream, str(ip), self.counters)
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: webhooks go over TCP only."""
        raise TargetRefusedOnConnect("webhooks are not delivered to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Delegate."""
        await self.inner.sleep(seconds)

    def close(self) -> None:
        """Release the resolver threads (a hung lookup is abandoned)."""
        self._dns.shutdown(wait=False, cancel_futures=True)


def default_ssl_context() -> ssl.SSLContext:
    """System trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` respected), TLS 1.2 or newer."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def open_pool(
    backend: GuardedBackend, *, max_connections: int, ssl_context: ssl.SSLContext | None = None
) -> httpcore.AsyncConnectionPool:
    """The dispatcher's connection pool: HTTP/1.1, no proxy, no retries, short keep-alive."""
    return httpcore.AsyncConnectionPool(
        ssl_context=ssl_context or default_ssl_context(),
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=15.0,
        http1=True,
        http2=False,
        retries=0,
        network_backend=backend,
    )


@dataclass
class Attempt:
    """What happened in one delivery attempt (a future delivery log stores these)."""

    url: str
    started_at: float
    duration: float = 0.0
    status: int | None = None
    error_kind: str | None = None  # refused, invalid_url, deadline, timeout, connect, tls,
    #                                 protocol, network, too_large, http_status, internal
    error: str | None = None
    bytes_received: int = 0
    peer: str | None = None
    excerpt: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        """A 2xx status arrived (the receiver acknowledged the event)."""
        return self.status is not None and 200 <= self.status < 300

    def summary(self) -> str | None:
        """A short text for ``events.last_error`` (None when delivered)."""
        if self.ok:
            return None
        text = self.error or self.error_kind or "failed"
        return text[:200]


def _kind(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ResponseTooLarge):
        return "too_large", str(exc)
    if isinstance(exc, TargetRefusedOnConnect):
        return "refused", f"refused: {exc}"
    if isinstance(exc, httpcore.TimeoutException):
        return "timeout", f"timeout: {type(exc).__name__}"
    if isinstance(exc, httpcore.ConnectError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLError) or "SSL" in str(exc) or "certificate" in str(exc):
            return "tls", f"TLS: {str(exc)[:150]}"
        return "connect", f"connect: {str(exc)[:150]}"
    if isinstance(exc, httpcore.RemoteProtocolError | httpcore.LocalProtocolError):
        return "protocol", f"protocol: {str(exc)[:150]}"
    return "network", f"network: {type(exc).__name__} {str(exc)[:150]}".strip()


async def attempt(
    pool: httpcore.AsyncConnectionPool,
    target: WebhookTarget,
    body: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
    max_bytes: int,
    excerpt: int = 1024,
) -> Attempt:
    """POST ``body`` to ``target`` once, within ``deadline`` seconds and ``max_bytes`` read."""
    rec = Attempt(target.url, time.time())
    meter = _Meter(max_bytes)
    token = _METER.set(meter)
    start = time.monotonic()
    url = httpcore.URL(
        scheme=target.scheme.encode(),
        host=target.host.encode(),
        port=target.port,
        target=target.target.encode(),
    )
    sent = [("Host", target.host_header), *headers.items()]
    timeouts = {"connect": deadline, "read": deadline, "write": deadline, "pool": deadline}
    got = bytearray()
    try:
        async with asyncio.timeout(deadline):
            async with pool.stream(
                "POST", url, headers=sent, content=body, extensions={"timeout": timeouts}
            ) as resp:
                rec.status = resp.status
                # the outcome is known: the excerpt gets a short grace, not the whole deadline
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EXCERPT_GRACE):
                        async for chunk in resp.aiter_stream():
                            got += chunk[: excerpt - len(got)]
                            if len(got) >= excerpt:
                                break  # the rest is never read: closing drops the connection
    except TimeoutError:
        if rec.status is None:
            rec.error_kind, rec.error = "deadline", f"no answer within {deadline:g} s"
    except (
        httpcore.NetworkError,
        httpcore.TimeoutException,
        httpcore.ProtocolError,
        ResponseTooLarge,
        TargetRefusedOnConnect,
    ) as exc:
        if rec.status is None:  # a body cut short after the status is the receiver's business
            rec.error_kind, rec.error = _kind(exc)
    finally:
        _METER.reset(token)
    if rec.status is not None and not rec.ok:
        rec.error_kind, rec.error = "http_status", f"HTTP {rec.status}"
    rec.duration = time.monotonic() - start
    rec.bytes_received, rec.peer, rec.excerpt = meter.received, meter.peer, bytes(got)
    return rec
