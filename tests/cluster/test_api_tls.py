"""The cluster's API hop over TLS, with HAProxy's real configuration (``render.haproxy_config``)
in front of two real API processes on 127.0.0.1: clients verify HAProxy with the cluster's CA
(other CA, system CAs, wrong name, plain HTTP: refused); HAProxy verifies every API process
(a process presenting another CA's, an expired, or another name's certificate, or plain HTTP,
never gets a request); a process whose ``/readyz`` fails (its PostgreSQL stopped) is taken out
of rotation and comes back when the database does.

No Patroni here (the PostgreSQL frontend of the same configuration has no server up): API
process 0 runs on a private PostgreSQL this test stops and starts, process 1 on SQLite; each is
its own institution, so the root keys a request returns tell which process served it.

The four processes with a certificate HAProxy must refuse (another CA's, expired, another
name's, plain HTTP) are an in-thread stub on process 1's port (:class:`Impostor`): it presents
that certificate and answers every request 200 with process 1's root key, so it would be taken
into rotation and show up in the answers if HAProxy let it through; the test checks it never
got a request. Before, each was a restart of the API process (~3 s of CPU each) answering the
same way.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from safescan.cluster import render
from safescan.cluster.procs import wait_until
from safescan.cluster.spec import ClusterSpec, free_base_port
from safescan.web import pki
from tests.faults.test_database_down import StoppableCluster, own_cluster
from tests.institution.harness import ServerProcess, init_db

__all__ = ["own_cluster"]  # the fixture, imported for this module's test

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)


@dataclass
class Front:
    """HAProxy in front of the two API processes."""

    spec: ClusterSpec
    workdir: Path
    ca: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.spec.ports.api}"

    def servers(self) -> dict[str, dict[str, str]]:
        """``api0``/``api1`` -> their stats row (status, check_status, ...); none while
        HAProxy has not opened its statistics socket yet (just started, a loaded machine)."""
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.workdir / "haproxy.sock"))
            except (FileNotFoundError, ConnectionRefusedError):
                assert self.proc.poll() is None, "HAProxy exited"
                return {}
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
        return {
            r["svname"]: r for r in rows if r["pxname"] == "api" and r["svname"].startswith("api")
        }

    def status(self, name: str) -> str:
        return self.servers()[name]["status"]

    def wait_status(self, name: str, up: bool, check: str = "") -> dict[str, str]:
        """Wait until ``name`` is UP (or DOWN) with a last check status starting with
        ``check`` (``L6``: the TLS layer failed, ``L7``: the HTTP answer, ``L4``: TCP)."""

        def reached() -> bool:
            row = self.servers()[name]
            return row["status"].startswith("UP" if up else "DOWN") and row[
                "check_status"
            ].startswith(check)

        ok = wait_until(reached, 90, 0.2)
        row = self.servers()[name]
        assert ok, {k: row[k] for k in ("status", "check_status", "last_chk")}
        return row


def _issue(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    where: Path,
    names: list[str],
    *,
    expired: bool = False,
) -> tuple[Path, Path]:
    start = pki._now() - dt.timedelta(days=30) if expired else None
    cert, key = pki.make_server_cert(ca, ca_key, names, not_before=start, days=1 if expired else 30)
    where.mkdir(parents=True, exist_ok=True)
    pki.write_private(where / "key.pem", pki.key_pem(key))
    pki.write_private(where / "cert.pem", pki.cert_pem(cert) + pki.cert_pem(ca))
    return where / "cert.pem", where / "key.pem"


def _ca_of(tls: pki.TlsDir) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return pki.load_ca(tls.ca_cert), key


def _api(db: str, keys: Path, port: int, cert: Path | None, key: Path | None) -> ServerProcess:
    extra = ["--no-webhooks"]
    if cert is not None and key is not None:
        extra += ["--tls-cert", str(cert), "--tls-key", str(key)]
    return ServerProcess(db, keys, port=port, extra=extra, webhook_allow=(), tls=cert is not None)


def _served_by(url: str, verify: ssl.SSLContext, kids: dict[str, str], n: int = 8) -> list[str]:
    """Which process answered each of ``n`` requests through HAProxy, each on a new connection
    (all must be 200)."""
    seen = []
    for _ in range(n):
        r = httpx.get(url + "/v1/keys", verify=verify, timeout=15)
        assert r.status_code == 200, r.text
        seen.append(kids[r.json()["root_keys"][0]["public_key"]])
    return seen


class Impostor(ThreadingHTTPServer):
    """An API process's stand-in on 127.0.0.1:``port`` presenting ``cert``/``key`` (plain HTTP
    when None): every request it parses is recorded (:attr:`got`) and answered 200 with
    ``root_key`` as the institution's root key, ``/readyz`` included; :attr:`accepted` counts
    the connections (HAProxy's checks)."""

    daemon_threads = True

    def __init__(self, port: int, cert: Path | None, key: Path | None, root_key: str) -> None:
        self.got: list[str] = []
        self.accepted = 0
        self.body = json.dumps({"status": "ready", "root_keys": [{"public_key": root_key}]})
        self.tls: ssl.SSLContext | None = None
        if cert is not None and key is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(cert, key)
        super().__init__(("127.0.0.1", port), _ImpostorHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        self.accepted += 1
        if self.tls is not None:  # the handshake runs in the request's thread, not here
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A refused handshake (what HAProxy is expected to do) is no error of the stub's."""

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(10)


class _ImpostorHandler(BaseHTTPRequestHandler):
    server: Impostor

    def do_GET(self) -> None:
        self.server.got.append(self.path)
        body = self.server.body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="safescan-api-tls-") as d:
        yield Path(d)


def test_every_api_hop_is_verified_tls_and_an_unready_process_leaves_rotation(
    own_cluster: StoppableCluster, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if HAPROXY is None:
        pytest.skip("HAProxy is not installed (Debian package haproxy)")
    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", "1")  # a read gives up after 1 s
    spec = ClusterSpec(state_dir=workdir, base_port=free_base_port())
    tls = pki.create_tls_dir(pki.TlsDir(workdir / "tls"))  # the cluster's CA + API certificate
    ca, ca_key = _ca_of(tls)
    front_cert, front_key = _issue(ca, ca_key, workdir / "front", list(pki.DEFAULT_NAMES))
    front_pem = workdir / "front.pem"
    pki.write_private(front_pem, front_cert.read_bytes() + front_key.read_bytes())
    cfg = workdir / "haproxy.cfg"
    stats_password = "stats-" + "x" * 20
    front_tls = render.HaproxyTls(front_pem, tls.ca_cert)
    cfg.write_text(render.haproxy_config(spec, workdir, front_tls, stats_password))
    check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    pg_db = own_cluster.cluster.create_database()
    sqlite_db = f"sqlite:///{workdir / 'api1.db'}"
    init_db(pg_db, workdir / "keys0")
    init_db(sqlite_db, workdir / "keys1")
    pinned = pki.client_context(tls.ca_cert)
    ports = [spec.ports.api_process(0), spec.ports.api_process(1)]
    good = (tls.server_cert, tls.server_key)
    api0 = _api(pg_db, workdir / "keys0", ports[0], *good).start(verify=pinned)
    api1 = _api(sqlite_db, workdir / "keys1", ports[1], *good).start(verify=pinned)
    started = [api0, api1]
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    front = Front(spec, workdir, tls.ca_cert, proc)
    try:
        kids = {}
        for name, p in (("api0", api0), ("api1", api1)):
            with httpx.Client(base_url=p.base_url, verify=pinned, timeout=10) as direct:
                kids[direct.get("/v1/keys").json()["root_keys"][0]["public_key"]] = name
        assert wait_until(
            lambda: (
                front.servers()
                and all(r["status"].startswith("UP") for r in front.servers().values())
            ),
            90,
            0.2,
        ), front.servers()
        assert set(_served_by(front.url, pinned, kids)) == {"api0", "api1"}  # round robin over both

        # --- HAProxy's statistics page: 401 without its user and password -------------------
        stats = f"http://127.0.0.1:{spec.ports.stats}/;csv"
        for auth in (None, ("stats", "wrong-password-0123456789"), ("admin", stats_password)):
            refused = httpx.get(stats, auth=auth, timeout=10)
            assert refused.status_code == 401 and "pxname" not in refused.text, auth
        shown = httpx.get(stats, auth=(render.STATS_USER, stats_password), timeout=10)
        assert shown.status_code == 200 and "api0" in shown.text

        # --- clients: only the cluster's CA, only the right name, only TLS -------------------
        other_ca, _ = pki.make_ca("another CA")
        for verify in (True, pki.context_for_ca(other_ca)):  # the system's CAs; another CA
            with pytest.raises(httpx.ConnectError):
                httpx.get(front.url + "/v1/keys", verify=verify, timeout=10)
        with (
            socket.create_connection(("127.0.0.1", spec.ports.api), timeout=10) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            pinned.wrap_socket(raw, server_hostname="institution.example")  # wrong name
        try:  # plain HTTP to the TLS port: no answer of the API's
            plain = httpx.get(f"http://127.0.0.1:{spec.ports.api}/v1/keys", timeout=10)
            assert plain.status_code == 400 and "root_keys" not in plain.text, plain.text
        except httpx.HTTPError:
            pass

        # --- readiness: process 0's PostgreSQL stops -> /readyz 503 -> out of rotation ---------
        own_cluster.stop()
        front.wait_status("api0", up=False, check="L7")  # the HTTP check (not TLS, not TCP)
        assert _served_by(front.url, pinned, kids) == ["api1"] * 8
        own_cluster.start()
        front.wait_status("api0", up=True)
        assert wait_until(lambda: "api0" in _served_by(front.url, pinned, kids, 4), 60, 0.5)

        # --- HAProxy verifies each process: a wrong certificate gets no request --------------
        other_ca, other_ca_key = pki.make_ca("another CA")
        variants: dict[str, tuple[Path, Path] | None] = {
            "another CA": _issue(
                other_ca, other_ca_key, workdir / "v-other", list(pki.DEFAULT_NAMES)
            ),
            "expired": _issue(
                ca, ca_key, workdir / "v-expired", list(pki.DEFAULT_NAMES), expired=True
            ),
            "another name": _issue(
                ca, ca_key, workdir / "v-name", ["elsewhere.example", "127.0.0.1"]
            ),
            "plain HTTP": None,
        }
        api1.stop()
        api1_key = next(k for k, name in kids.items() if name == "api1")
        for what, files in variants.items():
            cert, key = files if files is not None else (None, None)
            impostor = Impostor(ports[1], cert, key, api1_key)
            try:
                # HAProxy checked this certificate (twice), and refused it at the TLS layer
                assert wait_until(lambda i=impostor: i.accepted >= 2, 90, 0.1), what
                front.wait_status("api1", up=False, check="L6")
                assert _served_by(front.url, pinned, kids) == ["api0"] * 8, what
                assert front.status("api1").startswith("DOWN"), what  # and it stays out
            finally:
                impostor.stop()
            assert impostor.got == [], (what, impostor.got)  # not even a health check
        api1 = _api(sqlite_db, workdir / "keys1", ports[1], *good).start(verify=pinned)
        started.append(api1)
        front.wait_status("api1", up=True)  # the same process with the right certificate is back
        assert wait_until(lambda: "api1" in _served_by(front.url, pinned, kids, 4), 60, 0.5)
    finally:
        proc.terminate()
        proc.wait(15)
        for p in started:
            p.stop()
