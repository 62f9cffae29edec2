"""The connection guard of the web POS (``safescan pos serve``) and the wallet app (``safescan
wallet serve``), attacked over TLS on 127.0.0.1: real server processes, raw sockets.

Every attack runs against both servers, and after each a legitimate client (httpx, the pinned
CA) is served:

* 300 connections against a process whose ``RLIMIT_NOFILE`` is 160: connections that never
  send a ClientHello, stop inside it, finish the handshake and send nothing, drip their head a
  byte at a time (slowloris), or leave a keep-alive connection open after a request. The
  server's descriptors stay clear of the limit, a client is served while the crowd is there,
  and the crowd is closed by the server (head deadline, eviction).
* Clients dripping their request body: each is answered ``408 request_timeout`` at the body
  deadline and closed.
* One address holding more busy connections than its per-address bound: the extra ones are
  refused (over TLS, told why: the handshake, then ``503 too_many_connections``), while a
  client from another address is served at once.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from safescan.web import pki
from safescan.web.netguard import REFUSING_MAX
from tests.web.sites import PASS, pos_site

LIMIT = 160  # the servers' RLIMIT_NOFILE in the crowd tests
ATTACKER = "127.0.0.2"  # another loopback address: the "other client" of the per-address bound
#: a request with a body, per server (a route that reads it), and its Origin-less Host
BODY_ROUTE = {"pos": "/login", "wallet": "/api/pair"}


@dataclass
class Server:
    """A running server process: its URL, port and pid, and the pinned CA's context."""

    proc: subprocess.Popen[str]
    url: str
    ctx: ssl.SSLContext

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def health(self) -> int:
        """A legitimate client's request (a fresh connection)."""
        return httpx.get(self.url + "/health", verify=self.ctx, timeout=20).status_code

    def connect(self, *, tls: bool = True, source: str | None = None) -> socket.socket:
        """A raw connection (TLS done with the pinned CA, unless ``tls`` is False)."""
        raw = socket.create_connection(
            ("127.0.0.1", self.port), timeout=10, source_address=(source, 0) if source else None
        )
        return self.ctx.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pki.TlsDir]:
    """A POS terminal with a staff account, and a CA with a server certificate."""
    return pos_site(tmp_path_factory.mktemp("guard"))


def _lowered(limit: int | None) -> Callable[[], None] | None:
    if limit is None:
        return None

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


@contextlib.contextmanager
def serve(
    kind: str,
    files: tuple[Path, pki.TlsDir],
    tmp: Path,
    *extra: str,
    nofile: int | None = None,
) -> Iterator[Server]:
    """``safescan pos serve`` or ``safescan wallet serve`` over TLS on 127.0.0.1 (any port),
    with ``extra`` options and, if given, ``RLIMIT_NOFILE`` ``nofile``; stopped at the end."""
    config, tls = files
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SAFESCAN_POS_", "SAFESCAN_WALLET_"))
    }
    if kind == "pos":
        cmd = ["pos", "serve", "--config", str(config)]
        env["SAFESCAN_POS_PASSPHRASE"] = PASS
    else:
        cmd = ["wallet", "serve", "--wallet-dir", str(tmp / "wallet")]
    from tests.institution.pg import free_port  # not port 0: see tests/test_ports.py

    cmd += [
        "--port",
        str(free_port()),
        "--tls-cert",
        str(tls.server_cert),
        "--tls-key",
        str(tls.server_key),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "safescan", *cmd, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=_lowered(nofile),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY https://127.0.0.1:"), line
        server = Server(proc, line.split()[1], pki.client_context(tls.ca_cert))
        assert server.health() == 200
        yield server
    finally:
        proc.terminate()
        proc.wait(15)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection (what it sent before is read and
    dropped: the answer to a keep-alive request)."""
    s.settimeout(0.05)
    try:
        while s.recv(65536):
            pass
    except (TimeoutError, ssl.SSLWantReadError, BlockingIOError):
        return False
    except (OSError, ssl.SSLError):
        return True
    return True


def _told_too_many(s: socket.socket) -> bool:
    """Whether the server answered this connection ``503 too_many_connections`` and closed it
    (a refused connection over TLS: the handshake is done to say why)."""
    s.settimeout(0.5)
    seen = b""
    with contextlib.suppress(OSError, ssl.SSLError):  # TimeoutError included: a busy one
        while chunk := s.recv(65536):
            seen += chunk
    return seen.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in seen


def _open(server: Server, crowd: str) -> socket.socket | None:
    """One connection of the crowd, or None if the server refused or dropped it at once."""
    try:
        if crowd in ("no-handshake", "half-hello"):
            s = server.connect(tls=False)
            if crowd == "half-hello":  # a handshake record announcing 512 bytes: 1 sent
                s.sendall(b"\x16\x03\x01\x02\x00\x01")
            return s
        s = server.connect()
        if crowd == "slowloris":
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its head
        elif crowd == "after-a-request":  # a keep-alive connection left open
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return s
    except (OSError, ssl.SSLError):  # evicted or refused while it shook hands
        return None


CROWDS = ["no-handshake", "half-hello", "no-request", "slowloris", "after-a-request"]


@pytest.mark.slow
@pytest.mark.parametrize("crowd", CROWDS)
@pytest.mark.parametrize("kind", ["pos", "wallet"])
def test_a_crowd_of_idle_connections_cannot_exhaust_descriptors(
    kind: str, crowd: str, files: tuple[Path, pki.TlsDir], tmp_path: Path
) -> None:
    """300 connections against 160 descriptors; a client is served during and after; the
    crowd is closed by the server within the head deadline."""
    socks: list[socket.socket] = []
    with serve(kind, files, tmp_path, "--head-timeout", "2", nofile=LIMIT) as server:
        try:
            baseline = _sockets(server.pid)
            for i in range(300):  # far more connections than descriptors
                s = _open(server, crowd)
                if s is not None:
                    socks.append(s)
                if i % 50 == 0:
                    assert _fds(server.pid) < LIMIT - 16, "connections ate the reserve"
                    if crowd == "slowloris":  # the drip: one more byte of the head each
                        for t in socks:
                            with contextlib.suppress(OSError, ssl.SSLError):
                                t.sendall(b"X")
            assert _fds(server.pid) < LIMIT - 16
            assert server.health() == 200  # served while the crowd is there
            assert socks, "no connection of the crowd was accepted at all"
            deadline = time.monotonic() + 30
            left = socks
            while left:  # every one is closed by the server (the drip does not help)
                assert time.monotonic() < deadline, (len(left), _sockets(server.pid), baseline)
                time.sleep(0.2)
                if crowd == "slowloris":
                    for t in left:
                        with contextlib.suppress(OSError, ssl.SSLError):
                            t.sendall(b"X")
                left = [t for t in left if not _closed_by_server(t)]
            assert _sockets(server.pid) <= baseline + 2
            assert server.health() == 200
        finally:
            for s in socks:
                s.close()


@pytest.mark.slow
@pytest.mark.parametrize("sent", [0, 10, 90])
@pytest.mark.parametrize("kind", ["pos", "wallet"])
def test_a_dripped_body_is_cut_at_the_deadline(
    kind: str, sent: int, files: tuple[Path, pki.TlsDir], tmp_path: Path
) -> None:
    """Clients announcing 100 bytes of body and sending ``sent`` of them, then a byte now and
    then: each is answered 408 at the body deadline and closed; the server serves on."""
    socks: list[socket.socket] = []
    with serve(kind, files, tmp_path, "--body-timeout", "2") as server:
        try:
            for _ in range(10):
                s = server.connect()
                s.sendall(
                    f"POST {BODY_ROUTE[kind]} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                    f"Origin: {server.url}\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100\r\n\r\n".encode()
                    + b"{" * sent
                )
                socks.append(s)
            for s in socks:
                with contextlib.suppress(OSError, ssl.SSLError):
                    s.sendall(b" ")  # the drip
            for s in socks:  # each is answered 408 within the deadline, then closed
                s.settimeout(30)
                answer = b""
                with contextlib.suppress(ssl.SSLError, ConnectionResetError):
                    while chunk := s.recv(4096):
                        answer += chunk
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b'"code": "request_timeout"' in answer
            assert server.health() == 200
        finally:
            for s in socks:
                s.close()


@pytest.mark.slow
@pytest.mark.parametrize("busy", ["body-drip", "idle"])
@pytest.mark.parametrize("kind", ["pos", "wallet"])
def test_one_address_cannot_take_every_connection(
    kind: str, busy: str, files: tuple[Path, pki.TlsDir], tmp_path: Path
) -> None:
    """An address with 8 places (``--max-per-address 8``) opens 40 connections: busy ones (a
    body in progress) beyond its 8 are refused, idle ones push out its own oldest; it never
    holds more than 8, and a client from another address is served at once."""
    socks: list[socket.socket] = []
    opts = ("--max-per-address", "8", "--body-timeout", "60", "--head-timeout", "60")
    with serve(kind, files, tmp_path, *opts) as server:
        try:
            baseline = _sockets(server.pid)
            refused = 0
            for _ in range(40):
                try:
                    s = server.connect(source=ATTACKER)
                    if busy == "body-drip":
                        s.sendall(
                            f"POST {BODY_ROUTE[kind]} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}"
                            f"\r\nOrigin: {server.url}\r\nContent-Length: 100\r\n\r\n{{".encode()
                        )
                    socks.append(s)
                except (OSError, ssl.SSLError):
                    refused += 1
                # (+ the refused ones being told why: at most REFUSING_MAX, each for seconds)
                assert _sockets(server.pid) <= baseline + 8 + REFUSING_MAX + 2
            if busy == "body-drip":  # the 9th and later found no idle one to push out
                told = sum(_told_too_many(s) for s in socks)  # TLS done, then the typed 503
                assert refused + told >= 20, (refused, told)
                assert told >= 1, "a refused TLS client is told why (503 too_many_connections)"
                assert sum(not _closed_by_server(s) for s in socks) <= 8
            else:  # each newcomer pushed out the address's oldest idle connection
                open_ones = [s for s in socks if not _closed_by_server(s)]
                assert len(open_ones) <= 8, len(open_ones)
            assert server.health() == 200  # another address (127.0.0.1): served at once
        finally:
            for s in socks:
                s.close()
