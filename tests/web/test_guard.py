"""safescan.web.guard: the Host allow-list, the Origin check, sessions and throttling, attacked
with many variations (the servers' own tests attack them over real HTTP too)."""

from __future__ import annotations

import pytest

from safescan.code.errors import SafescanError
from safescan.web.guard import (
    CsrfRefused,
    HostNotAllowed,
    HostPolicy,
    NotSignedIn,
    OriginRefused,
    Sessions,
    Throttle,
    TooManyAttempts,
    check_csrf,
    default_hosts,
)
from safescan.web.listen import listen

POLICY = HostPolicy(default_hosts("127.0.0.1"), port=8091)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8091", "localhost:8091", "LocalHost:8091", "[::1]:8091", " 127.0.0.1:8091 "]
)
def test_loopback_names_with_the_port_are_allowed(host: str) -> None:
    assert POLICY.check_host(host).endswith(":8091")


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "127.0.0.1",  # no port: port 80
        "127.0.0.1:80",
        "127.0.0.1:8092",
        "127.0.0.2:8091",
        "0.0.0.0:8091",
        "evil.example:8091",
        "127.0.0.1.evil.example:8091",
        "localhost.:8091",
        "::1:8091",  # IPv6 without brackets
        "[::1]",
        "[::1]:80",
        "127.0.0.1:8091:8091",
        "127.0.0.1:8091@evil.example",
        "127.0.0.1%00:8091",
        "127.0.0.1:08091",
    ],
)
def test_every_other_host_is_refused(host: str | None) -> None:
    with pytest.raises(HostNotAllowed):
        POLICY.check_host(host)


def test_default_hosts_follow_the_bound_address() -> None:
    assert default_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert default_hosts("::1") == ["127.0.0.1", "localhost", "[::1]"]
    assert default_hosts("192.0.2.7") == ["192.0.2.7"]
    assert default_hosts("2001:db8::1") == ["[2001:db8::1]"]
    assert default_hosts("Wallet.Example") == ["wallet.example"]
    named = HostPolicy(["wallet.example", "other.example:443"], port=8443, scheme="https")
    assert named.check_host("wallet.example:8443") == "wallet.example:8443"
    assert named.check_host("other.example") == "other.example:443"


@pytest.mark.parametrize("method", ["GET", "HEAD", "get"])
def test_safe_methods_need_no_origin(method: str) -> None:
    POLICY.check_origin(method, None, "cross-site", "127.0.0.1:8091")


@pytest.mark.parametrize(
    ("origin", "site"),
    [
        (None, None),
        ("", None),
        ("null", None),
        ("http://evil.example", None),
        ("http://127.0.0.1:8092", None),
        ("https://127.0.0.1:8091", None),  # another scheme is another origin
        ("http://localhost:8091", None),  # another name for the host is another origin
        ("http://127.0.0.1", None),
        ("http://127.0.0.1:8091", "cross-site"),
        ("http://127.0.0.1:8091", "same-site"),
        ("http://127.0.0.1:8091", "none"),
        ("http://127.0.0.1:8091/", None),
        ("ws://127.0.0.1:8091", None),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_state_changes_need_this_origin(method: str, origin: str | None, site: str | None) -> None:
    with pytest.raises(OriginRefused):
        POLICY.check_origin(method, origin, site, "127.0.0.1:8091")


def test_own_origin_is_accepted() -> None:
    POLICY.check_origin("POST", "http://127.0.0.1:8091", "same-origin", "127.0.0.1:8091")
    POLICY.check_origin("POST", "http://LOCALHOST:8091", None, "localhost:8091")
    tls = HostPolicy(["127.0.0.1"], port=443, scheme="https")
    tls.check_origin("POST", "https://127.0.0.1", None, tls.check_host("127.0.0.1"))
    with pytest.raises(OriginRefused):
        tls.check_origin("POST", "http://127.0.0.1:443", None, "127.0.0.1:443")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_end_when_idle_too_long_absolutely_or_on_sign_out() -> None:
    clock = Clock()
    sessions = Sessions(idle_seconds=60, absolute_seconds=300, clock=clock)
    sid, first = sessions.create("customer")
    other, _ = sessions.create("customer")
    assert sid != other and len(sid) >= 40 and first.csrf != sid
    for _ in range(4):  # used every 59 s: alive
        clock.now += 59
        assert sessions.get(sid) is first
    clock.now += 61  # idle past the limit
    with pytest.raises(NotSignedIn):
        sessions.get(sid)
    with pytest.raises(NotSignedIn):
        sessions.get(sid)  # gone for good
    sid, _ = sessions.create("customer")
    for _ in range(6):
        clock.now += 55
    with pytest.raises(NotSignedIn):  # 330 s after creation: past the absolute limit
        sessions.get(sid)
    sid, _ = sessions.create("customer")
    sessions.end(sid)
    with pytest.raises(NotSignedIn):
        sessions.get(sid)
    for bad in (None, "", "x", sid.upper()):
        with pytest.raises(NotSignedIn):
            sessions.get(bad)


def test_sessions_end_when_their_user_is_no_longer_valid() -> None:
    sessions = Sessions()
    sid, _ = sessions.create("ana")
    assert sessions.get(sid, lambda user: user == "ana").user == "ana"
    with pytest.raises(NotSignedIn):
        sessions.get(sid, lambda user: False)
    with pytest.raises(NotSignedIn):
        sessions.get(sid)


def test_csrf_tokens_are_compared_exactly() -> None:
    sessions = Sessions()
    _, session = sessions.create("ana")
    check_csrf(session, session.csrf)
    for bad in (None, "", session.csrf[:-1], session.csrf + "x", session.csrf.upper(), " "):
        with pytest.raises(CsrfRefused):
            check_csrf(session, bad)


def test_throttle_counts_failures_in_a_sliding_window() -> None:
    clock = Clock()
    throttle = Throttle(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        throttle.fail("pair", "addr")
        throttle.check("pair")
    throttle.fail("pair")
    with pytest.raises(TooManyAttempts):
        throttle.check("pair")
    throttle.check("addr")  # only two failures on this key
    throttle.succeed("addr")
    throttle.fail("addr")
    throttle.check("addr")  # a success cleared its count
    clock.now += 61
    throttle.check("pair")  # the window moved on


def test_the_pos_keeps_its_own_limits_and_message() -> None:
    """The POS's sessions and sign-in throttle are the shared ones with the POS's settings."""
    from safescan.merchant import websec

    clock = Clock()
    throttle = websec.sign_in_throttle()
    throttle.clock = clock
    for _ in range(websec.MAX_FAILURES - 1):
        throttle.fail("name:ana")
    throttle.check("name:ana")
    throttle.fail("name:ana")
    with pytest.raises(TooManyAttempts, match="quarter of an hour"):
        throttle.check("name:ana")
    clock.now += websec.FAILURE_WINDOW + 1
    throttle.check("name:ana")
    sessions = websec.staff_sessions()
    sessions.clock = clock
    sid, _ = sessions.create("ana")
    clock.now += websec.IDLE_SECONDS + 1
    with pytest.raises(NotSignedIn):
        sessions.get(sid, lambda _user: True)


class ServeError(SafescanError):
    code = "serve_error"


def test_listen_binds_any_free_port_and_a_taken_one_is_the_callers_error() -> None:
    first = listen("127.0.0.1", 0, error=ServeError)
    try:
        port = first.getsockname()[1]
        assert port > 0
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port, error=ServeError)
        with pytest.raises(ServeError):
            listen("192.0.2.1", 0, error=ServeError)  # not an address of this machine
    finally:
        first.close()


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("127.0.0.1", 70000),  # before: OverflowError from bind(), a traceback
        ("127.0.0.1", -1),
        ("127.0.0.1", 1 << 70),
        ("127.0.0.\x00", 8000),  # before: TypeError (NUL in the host)
        ("::1\x00", 8000),
        ("", 8000),
        ("\u00e9" * 80, 8000),  # before: TypeError "encoding of hostname failed"
        ("bad host", 8000),
        ("no.such.host.invalid", 8000),
    ],
)
def test_a_bad_listen_address_is_the_callers_typed_error(host: str, port: int) -> None:
    """``pos serve`` / ``wallet serve`` with a port outside 0-65535 or a host that is no
    name: the caller's typed error, never an ``OverflowError``/``TypeError`` traceback. Port 0
    stays allowed on purpose (documented: any free port, announced on the READY line)."""
    with pytest.raises(ServeError, match="cannot listen"):
        listen(host, port, error=ServeError)
