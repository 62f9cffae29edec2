"""Request smuggling and oversized heads against a real ``safescan institution serve`` over TLS
on 127.0.0.1, raw sockets (redteam).

* **Smuggling**: a request whose framing two HTTP readers could disagree on (Content-Length
  with Transfer-Encoding, two Content-Lengths, an obfuscated or listed Transfer-Encoding, a
  signed length, a space before the colon, bare LF line ends, NUL, obs-fold) carrying a second,
  administrator request behind it. The server answers exactly one response, the typed ``400
  malformed_http`` (before: uvicorn's ``text/plain`` "Invalid HTTP request received."), closes
  the connection, and the hidden request never runs (no customer made).
* **Oversized heads**: a request line and headers beyond 64 KiB, sent at once or dripped, is
  the typed ``431 headers_too_large`` and the connection closes (before: a 100 KB header and
  5,000 headers were taken whole; nothing bounded a head but the head deadline). A head just
  under the bound is served.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safescan.web.netguard import MAX_HEAD
from tests.institution.harness import ServerProcess, init_db


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ServerProcess, str]]:
    with tempfile.TemporaryDirectory(prefix="safescan-framing-") as d:
        db = f"sqlite:///{Path(d) / 'inst.db'}"
        token = init_db(db, Path(d) / "keys")
        proc = ServerProcess(db, Path(d) / "keys", webhook_allow=()).start()
        try:
            yield proc, token
        finally:
            proc.stop()


def _exchange(server: ServerProcess, data: bytes, *, pieces: int = 1) -> bytes:
    """Send ``data`` (in ``pieces``) over a fresh TLS connection; everything the server sends
    until it closes."""
    ctx = server.verify
    assert isinstance(ctx, ssl.SSLContext)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    size = -(-len(data) // pieces)
    with contextlib.suppress(OSError):  # the server may close before the last piece
        for i in range(0, len(data), size):
            s.sendall(data[i : i + size])
    out = b""
    with contextlib.suppress(OSError):
        while chunk := s.recv(65536):
            out += chunk
    s.close()
    return out


def _customers(server: ServerProcess, token: str) -> list[object]:
    r = httpx.get(
        server.base_url + "/v1/admin/customers",
        headers={"Authorization": f"Bearer {token}"},
        verify=server.verify,
    )
    assert r.status_code == 200, r.text
    listed: list[object] = r.json()["customers"]
    return listed


def _hidden(token: str) -> bytes:
    body = b'{"name": "Smuggled"}'
    return (
        b"POST /v1/admin/customers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


FRONT = b"POST /v1/codes/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
SMUGGLING = {
    "CL.TE": FRONT + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE.CL": FRONT + b"Transfer-Encoding: chunked\r\nContent-Length: 200\r\n\r\n0\r\n\r\n",
    "two lengths": FRONT + b"Content-Length: 0\r\nContent-Length: 140\r\n\r\n",
    "TE obfuscated": FRONT + b"Transfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n",
    "TE listed": FRONT + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE tab": FRONT + b"Transfer-Encoding:\tchunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
    "signed length": FRONT + b"Content-Length: +0\r\n\r\n",
    "space before colon": FRONT + b"Content-Length : 140\r\n\r\n",
    "bare LF": b"POST /v1/codes/status HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 0\n\n",
    "NUL in a header": FRONT + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "obs-fold": FRONT + b"X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_a_smuggled_request_is_never_run_and_the_refusal_is_typed(
    server: tuple[ServerProcess, str], name: str
) -> None:
    proc, token = server
    before = _customers(proc, token)
    out = _exchange(proc, SMUGGLING[name] + _hidden(token))
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out[:300]
    assert b"content-type: application/json" in head.lower()
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "malformed_http", out[:300]
    assert out.count(b"HTTP/1.1 ") == 1, out  # one answer: the hidden request got none
    assert _customers(proc, token) == before  # and it did not run
    assert proc.get("/health").status_code == 200


@pytest.mark.parametrize("pieces", [1, 40], ids=["at-once", "dripped"])
@pytest.mark.parametrize("shape", ["one long header", "many headers", "long URL"])
def test_a_head_beyond_64_kib_is_a_typed_431(
    server: tuple[ServerProcess, str], shape: str, pieces: int
) -> None:
    proc, _ = server
    big = MAX_HEAD + 1024
    head = {
        "one long header": b"GET /v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: "
        + b"a" * big
        + b"\r\n",
        "many headers": b"GET /v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-%05d: aaaaaaaa\r\n" % i for i in range(big // 16)),
        "long URL": b"GET /v1/keys?" + b"a" * big + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    }[shape]
    out = _exchange(proc, head + b"\r\n", pieces=pieces)
    status, _, body = out.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), out[:300]
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert proc.get("/health").status_code == 200


def test_a_head_under_the_bound_is_served(server: tuple[ServerProcess, str]) -> None:
    proc, _ = server
    r = httpx.get(
        proc.base_url + "/v1/keys", headers={"X-Long": "a" * (MAX_HEAD - 2048)}, verify=proc.verify
    )
    assert r.status_code == 200, r.text
