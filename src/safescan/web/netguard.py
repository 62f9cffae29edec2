"""Bounded, self-cleaning client connections for safescan's HTTPS servers (uvicorn's httptools
protocol): the institution's API (``safescan institution serve``), the web POS (``safescan pos
serve``) and the wallet app (``safescan wallet serve``).

uvicorn closes a keep-alive connection a few seconds after its last response, but a connection
that never sends a request (or sends its head a byte at a time) stays open for ever, and every
open connection is a file descriptor. Enough of them and the process cannot open its database
any more. :class:`GuardedHttpToolsProtocol` closes that hole:

* at most :attr:`Limits.max_connections` connections are open at once. At the bound a new
  connection makes room by closing the connection that has been idle longest (no request in
  progress); only when every connection is busy with a request is the new one answered ``503``
  (``Retry-After: 1``) and closed: over HTTPS too, where the handshake is done first so that
  the answer can be read (at most :data:`REFUSING_MAX` such refusals at once, each within
  :data:`REFUSE_TIMEOUT`; when they are all taken the oldest is dropped for the newcomer, one
  still shaking hands first, so a crowd of refused connections that never shake hands, or
  never close, cannot keep newcomers from being told why). So idle
  connections can never lock clients out. The bound is
  also kept below the process's descriptor limit (``RLIMIT_NOFILE``) minus a reserve for the
  database, so clients can never take the descriptors the database needs;
* at most :attr:`Limits.max_per_address` of them come from one client address (0: no such
  bound). At that bound a new connection from the address closes that address's connection
  idle longest, else it is refused the same way: one address cannot take every place, even
  with connections that are busy (an event stream each);
* a connection must deliver a complete request head within :attr:`Limits.head_timeout` seconds
  of being opened or of its previous response, else it is closed (idle and slow-loris
  connections alike); a request being answered (an event stream included) is never cut.

Over HTTPS the protocol does the TLS handshake itself: uvicorn listens on plain TCP and each
accepted connection is upgraded with ``loop.start_tls`` (the certificate comes through the
environment, :data:`ENV_TLS`, like the limits), so a connection is counted against the bound,
evictable and on the clock from the moment it is accepted, not only once its handshake is
done. Left to the event loop (uvicorn's ``ssl_certfile``), a connection that never finishes,
or never starts, its handshake would be invisible here for the loop's 60 s handshake timeout,
and a few hundred of them took every descriptor. The handshake must finish within the head
timeout.

The limits come from the environment (:data:`ENV_LIMITS`, set by :func:`configure` in the
``serve`` command) so that every worker process of ``--workers N`` applies the same.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import ssl
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from safescan.code import strictjson
from safescan.code.errors import SafescanError
from safescan.code.numbers import canonical_int
from safescan.web.tls import TlsFiles

ENV_LIMITS = "SAFESCAN_CONNECTION_LIMITS"
#: the server certificate and key files (JSON list) when serving HTTPS; its key's password
ENV_TLS = "SAFESCAN_SERVER_TLS"
ENV_TLS_PASSWORD = "SAFESCAN_SERVER_TLS_KEY_PASSWORD"  # noqa: S105 - a variable name
DB_DESCRIPTORS = 3 * (16 + 8)  # pooled database connections (a SQLite one holds db, WAL, shm)
RESERVE = 64 + DB_DESCRIPTORS  # descriptors kept for everything but client connections

_OVERLOADED = (
    b'{"error":{"type":"Overloaded","code":"too_many_connections",'
    b'"message":"the server has too many open connections; retry shortly"}}'
)
#: a request head (request line and headers) may be at most this long (redteam: a 100 KB header
#: and 5,000 headers were taken whole; nothing bounded a head but the head deadline)
MAX_HEAD = 64 * 1024


def _typed_close(status: bytes, type_: str, code: str, message: str) -> bytes:
    """A whole typed JSON error response that closes the connection."""
    body = json.dumps({"error": {"type": type_, "code": code, "message": message}}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


#: the answer to a request the HTTP parser refuses (conflicting Content-Length and
#: Transfer-Encoding, two lengths, an obfuscated Transfer-Encoding, bare LF, NUL, obs-fold):
#: typed JSON, not uvicorn's text/plain
_MALFORMED_RESPONSE = _typed_close(
    b"400 Bad Request",
    "InvalidRequest",
    "malformed_http",
    "the request is not well-formed HTTP (conflicting or malformed framing headers)",
)
_HEAD_TOO_LARGE_RESPONSE = _typed_close(
    b"431 Request Header Fields Too Large",
    "InvalidRequest",
    "headers_too_large",
    f"the request line and headers are longer than {MAX_HEAD} bytes",
)

_OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
    + str(len(_OVERLOADED)).encode()
    + b"\r\n\r\n"
    + _OVERLOADED
)


class GuardSettingsError(SafescanError):
    """The limits or the certificate the server put in the environment do not read."""

    code = "config_error"


@dataclass(frozen=True)
class Limits:
    """Connection limits of one server process (``max_per_address`` 0: no per-address bound)."""

    max_connections: int = 1000
    head_timeout: float = 10.0
    max_per_address: int = 0

    def encode(self) -> str:
        """For :data:`ENV_LIMITS`."""
        return f"{self.max_connections},{self.head_timeout},{self.max_per_address}"

    @classmethod
    def from_env(cls) -> Limits:
        """The limits :func:`configure` put in the environment (defaults when it is unset).
        Read strictly: :class:`GuardSettingsError` naming the variable for anything but
        ``max_connections,head_timeout[,max_per_address]`` in the spelling :meth:`encode`
        writes (before: anything malformed silently gave the defaults, so a bound an operator
        set was dropped without a word, and ``int()``/``float()`` took ``" 5"``, ``"1_0"``,
        ``"５"``, ``nan``, ``inf`` or a negative timeout)."""
        text = os.environ.get(ENV_LIMITS)
        if not text:
            return cls()
        parts = text.split(",")
        try:
            if len(parts) not in (2, 3):
                raise ValueError("not two or three fields")
            most = canonical_int(parts[0], field=ENV_LIMITS, minimum=1, maximum=2**31)
            timeout = float(parts[1])
            if not (
                parts[1].isascii()
                and parts[1] == parts[1].strip()
                and "_" not in parts[1]
                and math.isfinite(timeout)
                and timeout > 0
            ):
                raise ValueError("the head timeout is not a number of seconds")
            per = canonical_int(parts[2], field=ENV_LIMITS, maximum=2**31) if len(parts) == 3 else 0
        except (ValueError, SafescanError):
            raise GuardSettingsError(
                f"{ENV_LIMITS} must be max_connections,head_timeout[,max_per_address]"
                f" (as the server writes it), not {text[:60]!r}"
            ) from None
        return cls(most, timeout, per)


def configure(limits: Limits, tls: TlsFiles | None = None) -> None:
    """Set the limits, and the certificate to serve HTTPS with (None: plain HTTP), for this
    process and the workers it starts."""
    os.environ[ENV_LIMITS] = limits.encode()
    os.environ.pop(ENV_TLS, None)
    os.environ.pop(ENV_TLS_PASSWORD, None)
    if tls is not None:
        os.environ[ENV_TLS] = json.dumps([str(tls.certfile), str(tls.keyfile)])
        if tls.key_password is not None:
            os.environ[ENV_TLS_PASSWORD] = tls.key_password


def serves_tls() -> bool:
    """Whether :func:`configure` set a certificate (the server speaks HTTPS)."""
    return bool(os.environ.get(ENV_TLS))


def server_context() -> ssl.SSLContext | None:
    """The server's TLS context from the environment, made as uvicorn makes it from
    ``ssl_certfile``/``ssl_keyfile`` with its defaults (a server context, TLS 1.2 at least,
    no client certificates asked for); None for plain HTTP."""
    text = os.environ.get(ENV_TLS)
    if not text:
        return None
    try:
        doc = strictjson.loads(text.encode("utf-8", "surrogatepass"))
    except ValueError:
        doc = None
    if not (isinstance(doc, list) and len(doc) == 2 and all(isinstance(p, str) and p for p in doc)):
        # before: json.loads and unpacking, a ValueError or TypeError traceback
        raise GuardSettingsError(f"{ENV_TLS} must be a JSON list [certificate file, key file]")
    cert, key = doc
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    password = os.environ.get(ENV_TLS_PASSWORD) or None
    ctx.load_cert_chain(cert, key, (lambda: password) if password else None)
    return ctx


def effective_max_connections(configured: int) -> int:
    """``configured``, lowered so that :data:`RESERVE` descriptors always stay free."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(8, min(configured, soft - RESERVE))


STATS: dict[str, int] = {"refused": 0, "evicted": 0, "timed_out": 0}
#: refused TLS connections whose handshake is done to give them the typed 503, at most at once
#: (taken from :data:`RESERVE`), and the seconds each may take (handshake, then close)
REFUSING_MAX = 16
REFUSE_TIMEOUT = 5.0
#: refused TLS connections being told why, from their handshake to their close (not counted
#: under the bounds), oldest first, with their raw transports
_REFUSING: dict[GuardedHttpToolsProtocol, asyncio.Transport] = {}

#: connections of this process accepted over TLS whose handshake is not done yet
_HANDSHAKING: dict[GuardedHttpToolsProtocol, asyncio.BaseTransport] = {}
#: the counted connections of this process by client address (handshaking ones included)
_BY_ADDRESS: dict[str, set[GuardedHttpToolsProtocol]] = {}


def _peer(transport: asyncio.BaseTransport) -> str:
    """The client's address (its IP without the port; ``""`` if the socket cannot say)."""
    name = transport.get_extra_info("peername")
    return str(name[0]) if isinstance(name, tuple) and name else ""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection bound and a request-head deadline
    (and, over HTTPS, the TLS handshake under both)."""

    _limits: Limits | None = None
    _max: int = 0
    #: the server certificate's context when this process serves HTTPS (:data:`ENV_TLS`)
    tls: ssl.SSLContext | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls._limits is None:
            cls.tls = server_context()
            cls._max = effective_max_connections(Limits.from_env().max_connections)
            cls._limits = Limits.from_env()
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._told = False  # refused over TLS, its handshake done: the 503 is on its way
        self._secured = cls.tls is None  # plain HTTP, or the TLS handshake is done
        self._address: str | None = None  # set once admitted (counted under its address)
        self.idle_since: float | None = None  # None while a request is being answered
        self._head_bytes = 0  # bytes received since the last head completed (0: none pending)
        self._in_head = True  # waiting for a request head
        self._cut = False  # answered 431: what else it sends is dropped
        self._head_size = 0  # the current request head's length so far

    @classmethod
    def limits(cls) -> tuple[int, float]:
        """(the effective connection bound, the head timeout) of this process."""
        lim = cls._limits or Limits.from_env()
        return cls._max or effective_max_connections(lim.max_connections), lim.head_timeout

    def _admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection under both bounds, making room by eviction if need be;
        False if it must be refused."""
        assert self._limits is not None
        address = _peer(transport)
        mine = _BY_ADDRESS.get(address, set())
        per_address = self._limits.max_per_address
        if per_address and len(mine) >= per_address and not self._evict_idle(mine):
            return False
        if len(self.connections) + len(_HANDSHAKING) >= self._max and not self._evict_idle():
            return False
        self._address = address
        _BY_ADDRESS.setdefault(address, set()).add(self)
        return True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """At the bounds make room (or refuse); then start the head deadline. Over TLS, first
        the handshake, counted and on the same clock (:meth:`_start_tls`)."""
        if self._address is None and not self._admit(transport):
            self._refused = True
            STATS["refused"] += 1
            # (uvloop's transports are not asyncio.Transport subclasses: typed by cast)
            stream = cast(asyncio.Transport, transport)
            if self._secured:  # a plain connection, or TLS done: a typed answer first
                stream.write(_OVERLOADED_RESPONSE)
                stream.close()
            else:  # TLS: the handshake first, then the answer (room made by the oldest)
                if len(_REFUSING) >= REFUSING_MAX:
                    _drop_oldest_refusal()
                _REFUSING[self] = stream
                self._start_tls(stream, min(self.limits()[1], REFUSE_TIMEOUT))
            return
        if not self._secured:
            _HANDSHAKING[self] = transport
            self.idle_since = self.loop.time()  # evictable while it shakes hands
            self._start_tls(cast(asyncio.Transport, transport), self.limits()[1])
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()

    def _start_tls(self, raw: asyncio.Transport, timeout: float) -> None:
        """Put TLS on the accepted connection now, within this call: ``loop.start_tls`` is
        stepped by hand up to its wait for the handshake (as a task would, but without a
        turn of the loop in between: uvloop starts reading as soon as ``connection_made``
        returns, and the client's hello must reach the TLS layer, not the HTTP parser); the
        handshake has ``timeout`` (the head timeout; a refused connection's is shorter, and
        so is its close); :meth:`_tls_done` continues once it ends."""
        assert self.tls is not None
        steps = self.loop.start_tls(
            raw,
            self,
            self.tls,
            server_side=True,
            ssl_handshake_timeout=timeout,
            ssl_shutdown_timeout=timeout if self._refused else None,
        )
        try:
            waiting = steps.send(None)
        except StopIteration:  # cannot happen: the handshake needs the peer
            self._abandon(raw)
            return
        except (OSError, RuntimeError, TypeError):  # the connection went away already
            self._abandon(raw)
            return
        if not isinstance(waiting, asyncio.Future):
            steps.close()
            raise RuntimeError(f"start_tls waited on {waiting!r}, not on a future")
        waiting.add_done_callback(lambda _f: self._tls_done(steps, raw))

    def _tls_done(self, steps: Any, raw: asyncio.Transport) -> None:
        """The handshake ended: serve the connection over TLS, or close it."""
        _HANDSHAKING.pop(self, None)
        try:
            steps.send(None)
        except StopIteration as finished:
            secured = finished.value
        except TimeoutError:
            STATS["timed_out"] += 1
            self._abandon(raw)
            return
        except (OSError, RuntimeError, asyncio.CancelledError):  # refused, closed, evicted
            self._abandon(raw)
            return
        else:
            steps.close()
            self._abandon(raw)
            return
        if self._refused:  # the handshake was only to say why: the typed 503, then close
            # (it stays in _REFUSING until connection_lost: its close is bounded too)
            self._told = True
            if secured is not None and not secured.is_closing():
                secured.write(_OVERLOADED_RESPONSE)
                secured.close()
            return
        if secured is None or secured.is_closing():
            self._forget_address()
            return
        self._secured = True
        self.idle_since = None
        self.connection_made(secured)

    def _abandon(self, raw: asyncio.Transport) -> None:
        """A connection whose handshake failed: uncount it and close it."""
        _HANDSHAKING.pop(self, None)
        _REFUSING.pop(self, None)
        self._forget_address()
        raw.close()

    def _evict_idle(self, among: set[GuardedHttpToolsProtocol] | None = None) -> bool:
        """Close the connection idle longest (one still shaking hands counts as idle), of
        ``among`` if given (one address's); False if every such connection is busy."""
        idle: list[tuple[float, GuardedHttpToolsProtocol, asyncio.BaseTransport]] = [
            (c.idle_since, c, c.transport)
            for c in self.connections
            if isinstance(c, GuardedHttpToolsProtocol)
            and c.idle_since is not None
            and not c.transport.is_closing()
            and (among is None or c in among)
        ]
        idle += [
            (c.idle_since, c, raw)
            for c, raw in _HANDSHAKING.items()
            if c.idle_since is not None and not raw.is_closing() and (among is None or c in among)
        ]
        if not idle:
            return False
        _since, victim, transport = min(idle, key=lambda v: v[0])
        victim.idle_since = None
        _drop(transport)
        STATS["evicted"] += 1
        return True

    def shutdown(self) -> None:
        """The server stops: an idle connection with nothing left to send is dropped as
        :func:`_drop` drops it, others are closed gracefully (uvicorn's). A TLS close waits for
        the client's close_notify, which an idle keep-alive client (a connection pool) never
        sends: every stop of a server that such a client had used took uvicorn's whole
        graceful timeout (5 s) before it could exit."""
        transport = cast(asyncio.Transport | None, getattr(self, "transport", None))
        idle = self.cycle is None or self.cycle.response_complete
        if idle and transport is not None and transport.get_write_buffer_size() == 0:
            _drop(transport)
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (a refused one, or one whose handshake never finished, was
        never counted by uvicorn)."""
        self._cancel_head_timer()
        _HANDSHAKING.pop(self, None)
        _REFUSING.pop(self, None)
        self._forget_address()
        if self._refused or not self._secured:
            return
        super().connection_lost(exc)

    def _forget_address(self) -> None:
        if self._address is None:
            return
        mine = _BY_ADDRESS.get(self._address)
        if mine is not None:
            mine.discard(self)
            if not mine:
                del _BY_ADDRESS[self._address]

    def data_received(self, data: bytes) -> None:
        """Bytes of a refused connection are dropped; a head longer than :data:`MAX_HEAD` (by
        more than one read) is answered ``431 headers_too_large`` and the connection closed."""
        if self._refused or self._cut:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD and not self.transport.is_closing():
            self._cut = True  # (still counted: uvicorn forgets it at connection_lost)
            self.transport.write(_HEAD_TOO_LARGE_RESPONSE)
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses: the typed JSON answer (431 for a head too long), then
        close."""
        del msg  # uvicorn's text ("Invalid HTTP request received.")
        self._cut = True
        too_long = self._head_size > MAX_HEAD
        self.transport.write(_HEAD_TOO_LARGE_RESPONSE if too_long else _MALFORMED_RESPONSE)
        self.transport.close()

    def on_message_begin(self) -> None:
        """A new request: its head size starts at 0."""
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        """Part of the request line (counted against :data:`MAX_HEAD`)."""
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header (counted against :data:`MAX_HEAD`)."""
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """A whole request head arrived in time (and short enough: a longer one raises, which
        the parser turns into :meth:`send_400_response`'s 431)."""
        if self._head_size > MAX_HEAD:
            raise ValueError("request head too long")
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        self.idle_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """After a response, the next request head must come in time too."""
        super().on_response_complete()
        self._in_head = True
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.idle_since = self.loop.time()
        assert self._limits is not None
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and not self.transport.is_closing():
            STATS["timed_out"] += 1
            _drop(self.transport)


def _drop_oldest_refusal() -> None:
    """Make room among the refusals for a newcomer (redteam: with every place taken, by refused
    connections that never shook hands or never closed, a newcomer was closed unanswered and
    saw a reset, and a client re-opening silent connections kept it so): abort the oldest that
    is still shaking hands, else the oldest already answered (its 503 is written; it waits
    only for the client's close)."""
    victim = next((c for c in _REFUSING if not c._told), None) or next(iter(_REFUSING))
    raw = _REFUSING.pop(victim)
    STATS["evicted"] += 1
    raw.abort()  # the handshake (or the close) fails; its _tls_done/connection_lost forget it


def _drop(transport: asyncio.BaseTransport) -> None:
    """Close an idle connection now. A TLS one is aborted: a graceful TLS close waits for the
    peer's close_notify (30 s), and a client that never answers would keep its descriptor and
    its place under the bound all that time."""
    if transport.get_extra_info("sslcontext") is not None:
        cast(asyncio.Transport, transport).abort()
    else:
        transport.close()


def connection_status() -> dict[str, Any]:
    """For readiness: the bounds, the head timeout and what was refused or closed."""
    bound, head = GuardedHttpToolsProtocol.limits()
    per_address = (GuardedHttpToolsProtocol._limits or Limits.from_env()).max_per_address
    return {
        "ok": True,
        "max_connections": bound,
        "max_per_address": per_address,
        "head_timeout_s": head,
        "open": sum(len(c) for c in _BY_ADDRESS.values()),
        **STATS,
    }


__all__ = [
    "ENV_LIMITS",
    "ENV_TLS",
    "GuardSettingsError",
    "GuardedHttpToolsProtocol",
    "Limits",
    "configure",
    "connection_status",
    "effective_max_connections",
    "server_context",
    "serves_tls",
]
