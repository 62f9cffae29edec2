"""The web POS's request checks: Host allow-list, Origin, staff sessions, CSRF, throttling.

* **Host**: every request must name one of the allowed hosts (with this server's port). A DNS
  rebinding page (``evil.example`` re-pointed at 127.0.0.1) sends ``Host: evil.example``: refused
  before any route runs, so it can neither read nor change anything.
* **Origin**: every state-changing request (any method but GET/HEAD) must carry an ``Origin``
  that is this server's own origin, and no ``Sec-Fetch-Site`` other than ``same-origin``.
* **Sessions**: staff sign in with a name and password (:mod:`.staff`); the session id lives in
  an ``HttpOnly; SameSite=Strict`` cookie (``Secure`` over HTTPS), is replaced at sign-in (no
  fixation), and ends after 30 idle minutes, 12 hours in all, at sign-out, or when the
  account is removed. Sessions live in the POS journal (:class:`JournalSessions`, the id
  stored only as its SHA-256) so a restart of the POS does not sign the staff out. Each
  session has its own CSRF token, required in ``X-CSRF-Token`` (or the ``csrf`` form field)
  of every staff request that changes something.
* **Throttling**: 5 failed sign-ins for one name or from one address in 15 minutes lock that
  name / address for 15 minutes.

Customers never get a session: the shop and checkout pages (``/shop``) hold only a capability
for their own order's status, which no staff route accepts.

The checks themselves (Host policy, Origin check, sessions, CSRF comparison, throttle) are
:mod:`safescan.web.guard`, shared with the wallet app; this module adds the POS's cookies and
its own refusal type.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safescan.web.guard import (
    SAFE_METHODS,
    CsrfRefused,
    HostNotAllowed,
    HostPolicy,
    NotSignedIn,
    OriginRefused,
    Session,
    Sessions,
    Throttle,
    TooManyAttempts,
    WebRequestRefused,
    check_csrf,
    default_hosts,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from safescan.merchant.journal import Journal

__all__ = [
    "ABSOLUTE_SECONDS",
    "CSRF_HEADER",
    "LOGIN_COOKIE",
    "SAFE_METHODS",
    "SESSION_COOKIE",
    "CsrfRefused",
    "HostNotAllowed",
    "HostPolicy",
    "JournalSessions",
    "NotSignedIn",
    "OriginRefused",
    "PosRequestRefused",
    "Session",
    "Sessions",
    "Throttle",
    "TooManyAttempts",
    "WebRequestRefused",
    "check_csrf",
    "cleared_cookie",
    "default_hosts",
    "journal_sessions",
    "login_cookie",
    "session_cookie",
    "sign_in_throttle",
    "staff_sessions",
]

SESSION_COOKIE = "safescan_pos_session"
LOGIN_COOKIE = "safescan_pos_login"
CSRF_HEADER = "X-CSRF-Token"
IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60


def staff_sessions() -> Sessions:
    """The POS's staff sessions: 30 minutes idle, 12 hours at most."""
    return Sessions(idle_seconds=IDLE_SECONDS, absolute_seconds=ABSOLUTE_SECONDS)


@dataclass
class JournalSessions(Sessions):
    """Staff sessions kept in the POS journal, so they survive a restart of the POS.

    The journal holds each session id's SHA-256 only (a copy of the file opens no session),
    with its user, CSRF token and times; wall-clock time, since monotonic time restarts."""

    journal: Journal | None = None
    clock: Callable[[], float] = field(default=time.time)

    def create(self, user: str) -> tuple[str, Session]:
        """A new session id (never one the client offered), stored."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user, secrets.token_urlsafe(32), now, now)
        assert self.journal is not None
        self.journal.sessions_purge(now - self.idle_seconds)
        self.journal.session_put(sid, user, session.csrf, now, now)
        return sid, session

    def get(self, sid: str | None, still_valid: Callable[[str], bool] | None = None) -> Session:
        """The live session for ``sid``; :class:`NotSignedIn` if none."""
        assert self.journal is not None
        now = self.clock()
        row = self.journal.session_get(sid) if sid else None
        if row is None:
            raise NotSignedIn("sign in first")
        session = Session(*row)
        if (
            now - session.last_seen > self.idle_seconds
            or now - session.created > self.absolute_seconds
            or (still_valid is not None and not still_valid(session.user))
        ):
            self.journal.session_end(sid or "")
            raise NotSignedIn("the session has ended: sign in again")
        if now - session.last_seen > 5:  # one write per few seconds, not per request
            self.journal.session_seen(sid or "", now)
        session.last_seen = now
        return session

    def end(self, sid: str | None) -> None:
        """Sign out."""
        if sid and self.journal is not None:
            self.journal.session_end(sid)


def journal_sessions(journal: Journal) -> JournalSessions:
    """The POS's staff sessions in ``journal``: 30 minutes idle, 12 hours at most."""
    return JournalSessions(
        idle_seconds=IDLE_SECONDS, absolute_seconds=ABSOLUTE_SECONDS, journal=journal
    )


def sign_in_throttle() -> Throttle:
    """Failed sign-ins: 5 per name or address in 15 minutes."""
    return Throttle(
        MAX_FAILURES,
        FAILURE_WINDOW,
        message="too many failed sign-ins; try again in a quarter of an hour",
    )


class PosRequestRefused(WebRequestRefused):
    """A web POS request was refused (unknown order, bad input, expired form)."""

    code = "pos_request_refused"
    status = 400


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
