"""What a client sees when the institution is at its connection limit (redteam: over plain HTTP
the newcomer read a typed ``503 too_many_connections``, over TLS the server closed the raw
connection before the handshake, and the client saw only "unexpected EOF" / "connection reset":
it could not tell an overloaded institution from a man in the middle or a dead host).

A real ``safescan institution serve`` on 127.0.0.1 with ``--max-connections 8`` (the least the
server keeps) is filled with 8 busy connections (a request body in progress, which eviction
cannot reclaim); then newcomers, over TLS with the pinned CA and over plain HTTP, get the same
typed answer: 503, ``Retry-After: 1``, ``{"error": {"code": "too_many_connections"}}``, and the
connection closed. A crowd of refused connections that never shake hands cannot hold the
server: beyond the refusals it answers at once it closes them, and it answers again after.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safescan.web.netguard import REFUSING_MAX
from tests.institution.harness import ServerProcess, init_db

BOUND = 8  # the least effective bound (safescan.web.netguard.effective_max_connections)


@pytest.fixture(scope="module")
def keys_and_db() -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="safescan-limit-") as d:
        db = f"sqlite:///{Path(d) / 'inst.db'}"
        init_db(db, Path(d) / "keys")
        yield db, Path(d) / "keys"


@contextlib.contextmanager
def served(db: str, keys: Path, *, tls: bool) -> Iterator[ServerProcess]:
    server = ServerProcess(
        db,
        keys,
        tls=tls,  # plain HTTP only to compare: the same answer on both
        extra=["--max-connections", str(BOUND), "--head-timeout", "60"],
        webhook_allow=(),
    ).start()
    try:
        yield server
    finally:
        server.stop()


def _connect(server: ServerProcess) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    if not server.tls:
        return raw
    ctx = server.verify
    assert isinstance(ctx, ssl.SSLContext)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _busy(server: ServerProcess) -> socket.socket:
    """A connection with a request body in progress (not idle: never evicted). The server's
    ``100 Continue`` says it has the head and waits for the body: busy, and counted."""
    s = _connect(server)
    s.sendall(
        b"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n"
    )
    seen = b""
    while b"\r\n\r\n" not in seen:
        chunk = s.recv(1024)
        assert chunk, seen
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 100 Continue"), seen
    s.sendall(b"{")
    return s


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):  # ssl.SSLError included: the close may be abrupt
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _assert_typed_503(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "too_many_connections"


def _served_again(server: ServerProcess, path: str) -> bool:
    """Whether ``path`` answers 200 once the server has seen the holders go (it learns of a
    close when its loop reads it: a few tries)."""
    for _ in range(100):
        r = httpx.get(server.base_url + path, verify=server.verify)
        if r.status_code == 200:
            return True
        _assert_typed_503(r)  # until then, only the typed refusal
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_at_the_connection_limit_a_client_gets_a_typed_503(
    keys_and_db: tuple[str, Path], tls: bool
) -> None:
    db, keys = keys_and_db
    with served(db, keys, tls=tls) as server:
        holders: list[socket.socket] = []
        try:
            holders = [_busy(server) for _ in range(BOUND)]
            # httpx with the pinned CA: the handshake verifies, the answer is typed
            for _ in range(3):
                _assert_typed_503(httpx.get(server.base_url + "/v1/keys", verify=server.verify))
            # a raw client: the handshake completes (the server's certificate, verified), then
            # the 503 arrives, before or after the request, and the server closes
            s = _connect(server)
            s.sendall(b"GET /v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = _read_all(s)
            s.close()
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer[:200]
            assert b'"code":"too_many_connections"' in answer
            ready = httpx.get(server.base_url + "/ready", verify=server.verify)
            _assert_typed_503(ready)  # still full: readiness is refused the same way
        finally:
            for s in holders:
                s.close()
        assert _served_again(server, "/v1/keys")  # the places are free again


def test_refused_connections_that_never_shake_hands_cannot_hold_the_server(
    keys_and_db: tuple[str, Path],
) -> None:
    """The refusal places (``REFUSING_MAX``) are the attacker's to fill: silent connections
    (no ClientHello), re-opened after every answer, and connections that finish their handshake
    but never read or close. Before, with every place taken a newcomer was closed unanswered
    (``ConnectionResetError``) for as long as the crowd was kept up; now the oldest refusal
    makes room for it, and each crowd is still closed by the server."""
    db, keys = keys_and_db
    with served(db, keys, tls=True) as server:
        holders: list[socket.socket] = []
        crowd: list[socket.socket] = []
        try:
            holders = [_busy(server) for _ in range(BOUND)]
            for _refill in range(3):  # the attacker refills the places before each newcomer
                crowd += [
                    socket.create_connection(("127.0.0.1", server.port), timeout=20)
                    for _ in range(REFUSING_MAX + 8)
                ]
                _assert_typed_503(httpx.get(server.base_url + "/v1/keys", verify=server.verify))
            # handshakes done, the 503 never read, the connection never closed
            shaken = [_connect(server) for _ in range(REFUSING_MAX + 2)]
            crowd += shaken
            _assert_typed_503(httpx.get(server.base_url + "/v1/keys", verify=server.verify))
            # every one is closed by the server (made room for, or at its deadline): a silent
            # one is never answered, a shaken one was answered the 503 or dropped for another
            assert all(_read_all(c) == b"" for c in crowd if c not in shaken)
            for c in shaken:
                answer = _read_all(c)
                assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer[:100]
            _assert_typed_503(httpx.get(server.base_url + "/v1/keys", verify=server.verify))
        finally:
            for s in holders + crowd:
                s.close()
        assert _served_again(server, "/health")
