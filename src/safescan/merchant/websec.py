"""The web POS's request checks: Host allow-list, Origin, staff sessions, CSRF, throttling.

* **Host**: every request must name one of the allowed hosts (with this server's port). A DNS
  rebinding page (``evil.example`` re-pointed at 127.0.0.1) sends ``Host: evil.example``: refused
  before any route runs, so it can neither read nor change anything.
* **Origin**: every state-changing request (any method but GET/HEAD) must carry an ``Origin``
  that is this server's own origin, and no ``Sec-Fetch-Site`` other than ``same-origin``.
* **Sessions**: staff sign in with a name and password (:mod:`.staff`); the session id lives in
  an ``HttpOnly; SameSite=Strict`` cookie (``Secure`` over HTTPS), is replaced at sign-in (no
  fixation), and ends after 30 idle minutes, 12 hours in all, at sign-out, or when the
  account is removed. Each session has its own CSRF token, required in ``X-CSRF-Token`` (or
  the ``csrf`` form field) of every staff request that changes something.
* **Throttling**: 5 failed sign-ins for one name or from one address in 15 minutes lock that
  name / address for 15 minutes.

Customers never get a session: the shop and checkout pages (``/shop``) hold only a capability
for their own order's status, which no staff route accepts.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from safescan.code.errors import SafescanError

SESSION_COOKIE = "safescan_pos_session"
LOGIN_COOKIE = "safescan_pos_login"
CSRF_HEADER = "X-CSRF-Token"
IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60
SAFE_METHODS = frozenset({"GET", "HEAD"})


class WebRequestRefused(SafescanError):
    """A web POS request was refused (host, origin, session, CSRF token, input)."""

    code = "pos_request_refused"
    status = 400


class HostNotAllowed(WebRequestRefused):
    """The Host header names a host this POS does not serve (DNS rebinding, misrouting)."""

    code = "host_not_allowed"
    status = 421


class OriginRefused(WebRequestRefused):
    """A state-changing request without this server's Origin (another site, or none)."""

    code = "origin_refused"
    status = 403


class NotSignedIn(WebRequestRefused):
    """A staff action without a live staff session."""

    code = "not_signed_in"
    status = 401


class CsrfRefused(WebRequestRefused):
    """A staff request without its session's anti-CSRF token."""

    code = "csrf_refused"
    status = 403


class TooManyAttempts(WebRequestRefused):
    """Too many failed sign-ins for this name or from this address; wait."""

    code = "too_many_attempts"
    status = 429


def default_hosts(bind_host: str) -> list[str]:
    """Hosts allowed by default: the loopback names when bound to loopback, else the bound
    address itself (a name a deployment uses is added with ``--allowed-host``)."""
    try:
        ip = ipaddress.ip_address(bind_host)
    except ValueError:
        return [bind_host.lower()]
    if ip.is_loopback:
        return ["127.0.0.1", "localhost", "[::1]"]
    if ip.is_unspecified:
        return ["127.0.0.1", "localhost", "[::1]"]
    return [f"[{ip}]" if ip.version == 6 else str(ip)]


@dataclass
class HostPolicy:
    """The allowed ``host[:port]`` values of the ``Host`` header, and the matching origins."""

    hosts: list[str]
    port: int = 0

    def allowed(self) -> set[str]:
        """``host:port`` strings; a host given with its own port keeps it."""
        out = set()
        for h in self.hosts:
            h = h.lower()
            has_port = h.rsplit("]", 1)[-1].count(":") == 1 if h.startswith("[") else ":" in h
            out.add(h if has_port else f"{h}:{self.port}")
        return out

    def check_host(self, host_header: str | None) -> str:
        """The request's ``host:port`` if allowed; else :class:`HostNotAllowed`."""
        host = (host_header or "").strip().lower()
        if host and ":" not in host.rsplit("]", 1)[-1]:
            host = f"{host}:80"
        if host not in self.allowed():
            raise HostNotAllowed("this POS does not answer to that host name")
        return host

    def check_origin(
        self,
        method: str,
        origin: str | None,
        fetch_site: str | None,
        host: str,
        own_scheme: str = "http",
    ) -> None:
        """Refuse a state-changing request that does not come from this server's pages."""
        if method.upper() in SAFE_METHODS:
            return
        if fetch_site is not None and fetch_site not in ("same-origin",):
            raise OriginRefused("this request came from another site")
        if not origin:
            raise OriginRefused("a request that changes something must carry this POS's Origin")
        scheme, _, rest = origin.lower().partition("://")
        if scheme != own_scheme:
            raise OriginRefused("this request came from another site")
        if ":" not in rest.rsplit("]", 1)[-1]:
            rest = f"{rest}:{443 if scheme == 'https' else 80}"
        if rest != host:
            raise OriginRefused("this request came from another site")


@dataclass
class Session:
    """A signed-in staff member."""

    user: str
    csrf: str
    created: float
    last_seen: float


@dataclass
class Sessions:
    """Staff sessions in memory (they end when the POS restarts)."""

    clock: Callable[[], float] = time.monotonic
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, user: str) -> tuple[str, Session]:
        """A new session id (never one the browser offered) and its session."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None, still_valid: Callable[[str], bool]) -> Session:
        """The live session for ``sid``; :class:`NotSignedIn` if none."""
        now = self.clock()
        with self._lock:
            session = self._by_id.get(sid or "")
            if session is None:
                raise NotSignedIn("sign in first")
            if (
                now - session.last_seen > IDLE_SECONDS
                or now - session.created > ABSOLUTE_SECONDS
                or not still_valid(session.user)
            ):
                del self._by_id[sid or ""]
                raise NotSignedIn("the session has ended: sign in again")
            session.last_seen = now
            return session

    def end(self, sid: str | None) -> None:
        """Sign out."""
        with self._lock:
            self._by_id.pop(sid or "", None)


def check_csrf(session: Session, token: str | None) -> None:
    """The request must carry this session's token (constant-time comparison)."""
    if not token or not secrets.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfRefused("this request did not come from this session's pages")


@dataclass
class Throttle:
    """Failed sign-ins per key (a name or an address) in a sliding window."""

    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, *keys: str) -> None:
        """:class:`TooManyAttempts` if any key has failed too often lately."""
        now = self.clock()
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if now - t < FAILURE_WINDOW]
                self._failures[key] = recent
                if len(recent) >= MAX_FAILURES:
                    raise TooManyAttempts(
                        "too many failed sign-ins; try again in a quarter of an hour"
                    )

    def fail(self, *keys: str) -> None:
        """Count a failure against every key."""
        now = self.clock()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, []).append(now)
            if len(self._failures) > 100_000:
                self._failures.clear()

    def succeed(self, key: str) -> None:
        """A good sign-in clears the name's count (not the address's)."""
        with self._lock:
            self._failures.pop(key, None)


def session_cookie(sid: str, *, secure: bool) -> str:
    """``Set-Cookie`` value of a new session."""
    flags = "; Secure" if secure else ""
    return (
        f"{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict;"
        f" Max-Age={ABSOLUTE_SECONDS}{flags}"
    )


def cleared_cookie(name: str, *, secure: bool) -> str:
    """``Set-Cookie`` value that removes ``name``."""
    flags = "; Secure" if secure else ""
    path = "/login" if name == LOGIN_COOKIE else "/"
    return f"{name}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0{flags}"


def login_cookie(nonce: str, *, secure: bool) -> str:
    """The sign-in form's double-submit nonce (login CSRF)."""
    flags = "; Secure" if secure else ""
    return f"{LOGIN_COOKIE}={nonce}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=900{flags}"
