"""Webhook receivers for tests: a raw TCP server on 127.0.0.1 and well-behaved or hostile
behaviours (endless body, endless or huge headers, slow drip, silence, reset, garbage, redirect).

Every behaviour is bounded (a byte cap, the listener's release event, or its close) so a test
never leaves an endless sender behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from safescan.procs import free_port, release_port

SEND_CAP = 256 * 1024 * 1024  # an "endless" sender gives up after this much


@dataclass
class Request:
    """One request as the receiver saw it."""

    head: bytes
    body: bytes
    sni: str | None = None

    def header(self, name: str) -> str | None:
        """A header's value (the first one), or None."""
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


Behaviour = Callable[["Listener", socket.socket, Request], None]


@dataclass
class Listener:
    """A TCP server on 127.0.0.1: reads each request, then runs ``behaviour`` in its thread."""

    behaviour: Behaviour
    tls: ssl.SSLContext | None = None
    port: int = 0
    connections: int = 0
    open: int = 0
    max_open: int = 0
    bytes_sent: int = 0
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    closed: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = free_port()  # (a bare port 0 could be one another test process reserved)
        self.sock.bind(("127.0.0.1", port))
        release_port(port)  # bound now: the reservation's descriptor is not needed any more
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._sni: dict[int, str | None] = {}
        if self.tls is not None:

            def note(sock: ssl.SSLSocket | ssl.SSLObject, name: str | None, _ctx: object) -> None:
                self._sni[id(sock)] = name

            self.tls.sni_callback = note
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """http(s)://127.0.0.1:port/hook"""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(60)
            sni = None
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                sni = self._sni.pop(id(conn), None)
            req = read_request(conn)
            if req is None:
                return
            req.sni = sni
            with self.lock:
                self.requests.append(req)
            self.behaviour(self, conn, req)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self.lock:
                self.open -= 1

    def send(self, conn: socket.socket, data: bytes) -> None:
        """Send and count (raises OSError when the peer has gone)."""
        conn.sendall(data)
        with self.lock:
            self.bytes_sent += len(data)

    def close(self) -> None:
        """Stop accepting and release every held connection."""
        self.closed = True
        self.release.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.thread.join(5)


def read_request(conn: socket.socket) -> Request | None:
    """Read one HTTP/1.1 request (head and Content-Length body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > 1 << 20:
            return None
    head, _, rest = buf.partition(b"\r\n\r\n")
    req = Request(head, b"")
    length = int(req.header("Content-Length") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    req.body = rest[:length]
    return req


# --- behaviours --------------------------------------------------------------------------------


def answer(status: int = 204, headers: dict[str, str] | None = None) -> Behaviour:
    """A well-behaved receiver: one answer, then close."""

    def run(lst: Listener, conn: socket.socket, _req: Request) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n"
        lst.send(conn, head.encode())

    return run


def endless_body(lst: Listener, conn: socket.socket, _req: Request) -> None:
    """200, then a chunked body that never ends (until the peer goes or the cap)."""
    lst.send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    while lst.bytes_sent < SEND_CAP and not lst.closed:
        lst.send(conn, chunk)


def endless_headers(lst: Listener, conn: socket.socket, _req: Request) -> None:
    """A status line, then header lines forever."""
    lst.send(conn, b"HTTP/1.1 200 OK\r\n")
    n = 0
    while lst.bytes_sent < SEND_CAP and not lst.closed:
        n += 1
        lst.send(conn, b"X-Pad-%d: %s\r\n" % (n, b"a" * 1000))


def huge_header(lst: Listener, conn: socket.socket, _req: Request) -> None:
    """One 4 MiB header value."""
    lst.send(conn, b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * (4 << 20) + b"\r\n\r\n")


def drip_headers(lst: Listener, conn: socket.socket, _req: Request) -> None:
    """The response head one byte at a time, 10 bytes a second, never finished."""
    lst.send(conn, b"HTTP/1.1 200 OK\r\n")
    while not lst.release.wait(0.1):
        lst.send(conn, b"a" if lst.bytes_sent % 40 else b"X-Drip: ")


def drip_body(lst: Listener, conn: socket.socket, _req: Request) -> None:
    """500 with a promised 1 MB body sent 10 bytes a second."""
    lst.send(conn, b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000\r\n\r\n")
    while not lst.release.wait(0.1):
        lst.send(conn, b"z")


def silent(lst: Listener, conn: socket.socket, _req: Request) -> None:
    """Read the request, never answer; return when the client hangs up (or on release), so
    that ``open`` counts the connections the client really still holds."""
    conn.settimeout(0.1)
    while not lst.release.is_set():
        try:
            if not conn.recv(1):
                return
        except TimeoutError:
            continue


def reset(_lst: Listener, conn: socket.socket, _req: Request) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def garbage(lst: Listener, conn: socket.socket, _req: Request) -> None:
    """Bytes that are not HTTP."""
    lst.send(conn, b"\x16\x03\x01\x00\xffNOT HTTP AT ALL\r\n\r\n\x00\x01\x02")


def redirect(location: str, status: int = 307) -> Behaviour:
    """A redirect to ``location``."""
    return answer(status, {"Location": location})


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# --- TLS ------------------------------------------------------------------------------------


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A throwaway certificate authority (key, certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safescan test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def server_tls(
    tmp: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, names: list[str]
) -> ssl.SSLContext:
    """A TLS server context with a certificate for ``names`` (and 127.0.0.1) issued by ``ca``
    (self-signed without one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key, issuer = ca if ca is not None else (key, None)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    stem = tmp / f"srv-{names[0]}-{x509.random_serial_number()}"
    Path(f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{stem}.crt", f"{stem}.key")
    return ctx
