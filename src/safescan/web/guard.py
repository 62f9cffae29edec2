"""Request guards for safescan's local web servers: Host, Origin, sessions, CSRF.

* **Host**: every request must name one of the allowed hosts (with the server's port). A DNS
  rebinding page (``evil.example`` re-pointed at 127.0.0.1) sends ``Host: evil.example``: it is
  refused before any route runs, so it can neither read nor change anything.
* **Origin**: every state-changing request (any method but GET/HEAD) must carry an
  ``Origin`` that is the server's own origin, and no ``Sec-Fetch-Site`` other than
  ``same-origin``.
* **Sessions**: random 256-bit ids made by the server (never one a client offered), ended
  after an idle time, an absolute lifetime, or on sign-out; each has its own CSRF token.

:class:`GuardMiddleware` applies the Host and Origin checks to a whole ASGI application.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from safescan.code.errors import SafescanError

SAFE_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WebRequestRefused(SafescanError):
    """A request to a local web server was refused (host, origin, session, token, input)."""

    code = "web_request_refused"
    status = 400


class HostNotAllowed(WebRequestRefused):
    """The Host header names a host this server does not serve (DNS rebinding, misrouting)."""

    code = "host_not_allowed"
    status = 421


class OriginRefused(WebRequestRefused):
    """A state-changing request without the server's own Origin (another site, or none)."""

    code = "origin_refused"
    status = 403


class NotSignedIn(WebRequestRefused):
    """A request without a live session."""

    code = "not_signed_in"
    status = 401


class CsrfRefused(WebRequestRefused):
    """A request without its session's anti-CSRF token."""

    code = "csrf_refused"
    status = 403


class TooManyAttempts(WebRequestRefused):
    """Too many failed attempts lately; wait."""

    code = "too_many_attempts"
    status = 429


def default_hosts(bind_host: str) -> list[str]:
    """Hosts allowed by default: the loopback names when bound to loopback (or to every
    address), else the bound address itself."""
    try:
        ip = ipaddress.ip_address(bind_host)
    except ValueError:
        return [bind_host.lower()]
    if ip.is_loopback or ip.is_unspecified:
        return ["127.0.0.1", "localhost", "[::1]"]
    return [f"[{ip}]" if ip.version == 6 else str(ip)]


def _split_port(hostport: str) -> tuple[str, str | None]:
    """``host[:port]`` (IPv6 in brackets) -> (host, port or None)."""
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return host + "]", port
    if hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
        return host, port
    return hostport, None


@dataclass
class HostPolicy:
    """The allowed ``host[:port]`` values of the ``Host`` header, and the matching origins."""

    hosts: list[str]
    port: int = 0
    scheme: str = "http"

    def allowed(self) -> set[str]:
        """``host:port`` strings; a host given with its own port keeps it."""
        out = set()
        for h in self.hosts:
            host, port = _split_port(h.lower())
            out.add(f"{host}:{port if port is not None else self.port}")
        return out

    def check_host(self, host_header: str | None) -> str:
        """The request's ``host:port`` if allowed; else :class:`HostNotAllowed`."""
        host, port = _split_port((host_header or "").strip().lower())
        if port is None:
            port = "443" if self.scheme == "https" else "80"
        value = f"{host}:{port}"
        if not host or value not in self.allowed():
            raise HostNotAllowed("this server does not answer to that host name")
        return value

    def check_origin(
        self,
        method: str,
        origin: str | None,
        fetch_site: str | None,
        host: str,
        own_scheme: str | None = None,
    ) -> None:
        """Refuse a state-changing request that does not come from this server's pages
        (``own_scheme``: the scheme the request came in on; default the policy's)."""
        if method.upper() in SAFE_METHODS:
            return
        scheme_expected = (own_scheme or self.scheme).lower()
        if fetch_site is not None and fetch_site != "same-origin":
            raise OriginRefused("this request came from another site")
        if not origin:
            raise OriginRefused("a request that changes something must carry this site's Origin")
        scheme, _, rest = origin.lower().partition("://")
        if scheme != scheme_expected:
            raise OriginRefused("this request came from another site")
        name, port = _split_port(rest)
        if port is None:
            port = "443" if scheme == "https" else "80"
        if f"{name}:{port}" != host:
            raise OriginRefused("this request came from another site")


class GuardMiddleware:
    """ASGI middleware: the Host allow-list on every HTTP request, the Origin check on every
    state-changing one. A refusal is a JSON error (``{"error": {...}}``) with its status."""

    def __init__(
        self, app: AsgiApp, policy: HostPolicy, headers: dict[str, str] | None = None
    ) -> None:
        self.app = app
        self.policy = policy
        self.headers = dict(headers or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            host = self.policy.check_host(raw.get("host"))
            self.policy.check_origin(
                scope["method"], raw.get("origin"), raw.get("sec-fetch-site"), host
            )
        except WebRequestRefused as exc:
            await refuse(send, exc, self.headers)
            return
        await self.app(scope, receive, send)


async def refuse(send: Send, exc: WebRequestRefused, headers: dict[str, str]) -> None:
    """Answer with ``exc`` as a JSON error."""
    body = json.dumps({"error": exc.to_dict()}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": head})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Session:
    """A live session: who, its anti-CSRF token, when it began and was last used."""

    user: str
    csrf: str
    created: float
    last_seen: float


@dataclass
class Sessions:
    """Sessions in memory (they end when the server restarts)."""

    idle_seconds: float = 30 * 60
    absolute_seconds: float = 12 * 3600
    clock: Callable[[], float] = time.monotonic
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, user: str) -> tuple[str, Session]:
        """A new session id (never one the client offered) and its session."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None, still_valid: Callable[[str], bool] | None = None) -> Session:
        """The live session for ``sid``; :class:`NotSignedIn` if none."""
        now = self.clock()
        with self._lock:
            session = self._by_id.get(sid or "")
            if session is None:
                raise NotSignedIn("sign in first")
            if (
                now - session.last_seen > self.idle_seconds
                or now - session.created > self.absolute_seconds
                or (still_valid is not None and not still_valid(session.user))
            ):
                del self._by_id[sid or ""]
                raise NotSignedIn("the session has ended: sign in again")
            session.last_seen = now
            return session

    def end(self, sid: str | None) -> None:
        """Sign out."""
        with self._lock:
            self._by_id.pop(sid or "", None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)


def check_csrf(session: Session, token: str | None) -> None:
    """The request must carry this session's token (constant-time comparison)."""
    if not token or not secrets.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfRefused("this request did not come from this session's pages")


@dataclass
class Throttle:
    """Failures per key (a name, an address, a secret) in a sliding window."""

    max_failures: int = 5
    window: float = 15 * 60
    clock: Callable[[], float] = time.monotonic
    message: str = "too many failed attempts; wait and try again"
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, *keys: str) -> None:
        """:class:`TooManyAttempts` if any key has failed too often lately."""
        now = self.clock()
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if now - t < self.window]
                self._failures[key] = recent
                if len(recent) >= self.max_failures:
                    raise TooManyAttempts(self.message)

    def fail(self, *keys: str) -> None:
        """Count a failure against every key."""
        now = self.clock()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, []).append(now)
            if len(self._failures) > 100_000:
                self._failures.clear()

    def succeed(self, key: str) -> None:
        """A success clears that key's count (a good sign-in clears the name's, not the
        address's)."""
        with self._lock:
            self._failures.pop(key, None)
