"""HTTPS on the institution, attacked through a real `institution serve` on 127.0.0.1.

`init` makes a private CA and a server certificate; clients pin that CA. Refused: a server
certificate from another CA (several forgeries), a certificate for another name, an expired or
not-yet-valid one, plain HTTP to the TLS port, plain HTTP served off loopback. Accepted: the
pinned CA, and a rotated server certificate from the same CA without any client change.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from safescan.web import pki
from tests.institution import zygote
from tests.institution.harness import PASSPHRASE, ServerProcess, env, init_db, institution_cli
from tests.institution.pg import free_port


@dataclass
class Site:
    db_url: str
    keys: Path
    tmp: Path

    @property
    def tls(self) -> pki.TlsDir:
        return pki.TlsDir(self.keys.with_name(self.keys.name + ".tls"))

    def ca(self) -> tuple[x509.Certificate, pki.ec.EllipticCurvePrivateKey]:
        key = pki.load_ca_key(self.tls, PASSPHRASE.encode())  # sealed under the passphrase
        return pki.load_ca(self.tls.ca_cert), key


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with tempfile.TemporaryDirectory(prefix="safescan-tls-") as d:
        tmp = Path(d)
        db_url = f"sqlite:///{tmp / 'institution.db'}"
        init_db(db_url, tmp / "keys")
        yield Site(db_url, tmp / "keys", tmp)


def pinned(site: Site) -> ssl.SSLContext:
    return pki.client_context(site.tls.ca_cert)


def write_pair(
    directory: Path, cert: x509.Certificate, key: pki.ec.EllipticCurvePrivateKey, chain: bytes = b""
) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(pki.cert_pem(cert) + chain)
    pki.write_private(directory / "key.pem", pki.key_pem(key))
    return ["--tls-cert", str(directory / "cert.pem"), "--tls-key", str(directory / "key.pem")]


def refused(url: str, ctx: ssl.SSLContext) -> str:
    with pytest.raises(httpx.ConnectError) as info:
        httpx.get(url + "/health", verify=ctx, timeout=10)
    return str(info.value)


# --- what init makes --------------------------------------------------------------------


def test_init_makes_a_private_ca_and_server_certificate(site: Site) -> None:
    d = site.tls
    for path in (d.ca_key, d.server_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ca = pki.load_ca(d.ca_cert)
    chain = x509.load_pem_x509_certificates(d.server_cert.read_bytes())
    leaf = chain[0]
    assert leaf.issuer == ca.subject
    ca.public_key().verify(  # type: ignore[call-arg, union-attr]
        leaf.signature,
        leaf.tbs_certificate_bytes,
        pki.ec.ECDSA(hashes.SHA256()),  # type: ignore[arg-type]
    )
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(v) for v in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_init_prints_the_ca_fingerprint_and_takes_extra_names(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'i.db'}"
    out = institution_cli(
        "init",
        "--db",
        db,
        "--json",
        "--tls-name",
        "pay.example.org",
        "--tls-name",
        "10.1.2.3",
    )
    assert out.returncode == 0, out.stderr
    tls = json.loads(out.stdout)["tls"]
    assert tls["ca_sha256"] == pki.ca_fingerprint(Path(tls["ca"]))
    leaf = x509.load_pem_x509_certificates((Path(tls["ca"]).parent / "server.pem").read_bytes())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pay.example.org" in sans.get_values_for_type(x509.DNSName)
    assert "10.1.2.3" in {str(v) for v in sans.get_values_for_type(x509.IPAddress)}


@pytest.mark.parametrize("bad", ["-bad-.ex ample", "a..b", "x" * 70 + ".org", "ünï.org"])
def test_init_refuses_a_bad_certificate_name_and_writes_nothing(tmp_path: Path, bad: str) -> None:
    db = f"sqlite:///{tmp_path / 'i.db'}"
    out = institution_cli("init", "--db", db, "--tls-name", bad)
    assert out.returncode == 2
    assert "certificate_name_error" in out.stderr.replace("\n", "")
    assert list(tmp_path.iterdir()) == []


# --- the pinned CA is accepted, everything else refused -----------------------------------


def test_handshake_with_the_pinned_ca(site: Site) -> None:
    server = ServerProcess(site.db_url, site.keys, tls=True).start()
    try:
        assert server.base_url.startswith("https://")
        with server.client(timeout=10) as client:
            assert client.get("/health").status_code == 200
        for host in ("localhost", "127.0.0.1"):  # both names are in the certificate
            url = f"https://{host}:{server.port}/health"
            assert httpx.get(url, verify=pinned(site), timeout=10).status_code == 200
        assert "listening on https://" in server.output()
        # a client trusting only the system CAs (a public-CA world) does not accept it
        refused(server.base_url, ssl.create_default_context())
        # another private CA pinned instead of ours
        other, _ = pki.make_ca("safescan private CA")  # same name, another key
        other_file = site.tmp / "other-ca.pem"
        other_file.write_bytes(pki.cert_pem(other))
        assert "CERTIFICATE_VERIFY_FAILED" in refused(
            server.base_url, pki.client_context(other_file)
        )
        # plain HTTP to the TLS port gets no answer
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10)
    finally:
        server.stop()


def _forgeries(
    site: Site,
) -> dict[str, tuple[x509.Certificate, pki.ec.EllipticCurvePrivateKey, bytes]]:
    """Server certificates for 127.0.0.1 that do not chain to the pinned CA."""
    ca, ca_key = site.ca()
    other_ca, other_key = pki.make_ca("safescan private CA")
    out = {}
    evil_ca, evil_key = pki.make_ca("evil CA")
    out["another CA"] = (*pki.make_server_cert(evil_ca, evil_key), b"")
    # a CA with our CA's very name and the chain file naming it: the key decides, not the name
    out["look-alike CA in the chain"] = (
        *pki.make_server_cert(other_ca, other_key),
        pki.cert_pem(other_ca),
    )
    # self-signed by the server's own key
    self_ca, self_key = pki.make_ca("127.0.0.1")
    out["self-signed"] = (self_ca, self_key, b"")
    # signed by a leaf of the pinned CA (not a CA: path length / CA flag refuse it)
    leaf, leaf_key = pki.make_server_cert(ca, ca_key)
    forged, forged_key = pki.make_server_cert(leaf, leaf_key)  # type: ignore[arg-type]
    out["signed by a leaf of the pinned CA"] = (forged, forged_key, pki.cert_pem(leaf))
    return out


@pytest.mark.parametrize(
    "forgery",
    [
        "another CA",
        "look-alike CA in the chain",
        "self-signed",
        "signed by a leaf of the pinned CA",
    ],
)
def test_a_server_certificate_from_another_ca_is_refused(site: Site, forgery: str) -> None:
    cert, key, chain = _forgeries(site)[forgery]
    extra = write_pair(site.tmp / forgery.replace(" ", "_"), cert, key, chain)
    server = ServerProcess(site.db_url, site.keys, extra=extra, tls=True)
    _start_unverified(server)
    try:
        assert "CERTIFICATE_VERIFY_FAILED" in refused(server.base_url, pinned(site))
    finally:
        server.stop()


@pytest.mark.parametrize(
    "names", [["other.example"], ["127.0.0.2"], ["localhost"], ["*.0.0.1"]], ids=str
)
def test_a_certificate_for_another_name_is_refused(site: Site, names: list[str]) -> None:
    ca, ca_key = site.ca()
    if names == ["*.0.0.1"]:
        cert, key = _with_sans(ca, ca_key, [x509.DNSName("*.0.0.1")])
    else:
        cert, key = pki.make_server_cert(ca, ca_key, names)
    extra = write_pair(site.tmp / f"name-{abs(hash(tuple(names)))}", cert, key)
    server = ServerProcess(site.db_url, site.keys, extra=extra, tls=True)
    _start_unverified(server)
    try:
        msg = refused(f"https://127.0.0.1:{server.port}", pinned(site))
        assert "CERTIFICATE_VERIFY_FAILED" in msg and (
            "mismatch" in msg.lower() or "IP address" in msg or "hostname" in msg.lower()
        )
        if names == ["localhost"]:  # the right name is accepted on the same server
            url = f"https://localhost:{server.port}/health"
            assert httpx.get(url, verify=pinned(site), timeout=10).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("when", ["expired", "not yet valid", "expired long ago"])
def test_an_expired_or_future_certificate_is_refused(site: Site, when: str) -> None:
    ca, ca_key = site.ca()
    now = dt.datetime.now(dt.UTC)
    start = {
        "expired": now - dt.timedelta(days=2),
        "not yet valid": now + dt.timedelta(days=1),
        "expired long ago": now - dt.timedelta(days=4000),
    }[when]
    cert, key = pki.make_server_cert(ca, ca_key, not_before=start, days=1)
    extra = write_pair(site.tmp / when.replace(" ", "_"), cert, key)
    server = ServerProcess(site.db_url, site.keys, extra=extra, tls=True)
    _start_unverified(server)
    try:
        msg = refused(server.base_url, pinned(site))
        assert "CERTIFICATE_VERIFY_FAILED" in msg
        assert "expired" in msg or "not yet valid" in msg
    finally:
        server.stop()


def _with_sans(
    ca: x509.Certificate, ca_key: pki.ec.EllipticCurvePrivateKey, sans: list[x509.GeneralName]
) -> tuple[x509.Certificate, pki.ec.EllipticCurvePrivateKey]:
    key = pki.ec.generate_private_key(pki.ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _start_unverified(server: ServerProcess) -> None:
    """Start a server whose certificate no honest client accepts: wait for its line
    "listening on https://..." instead of a verified /health."""
    import time

    cmd = [
        sys.executable,
        "-m",
        "safescan.institution",
        "serve",
        "--db",
        server.db_url,
        "--keys",
        str(server.keys),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        *server.extra,
    ]
    # forked from the zygote with the imports done where it fits (as ServerProcess.start)
    server.proc = zygote.start(cmd[3:], env(), server.log, server.log) or subprocess.Popen(
        cmd, env=env(), stdout=server.log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while "listening on https://" not in server.output():
        if server.proc.poll() is not None or time.monotonic() > deadline:
            out = server.output()[-2000:]
            server.stop()
            raise RuntimeError(f"server did not come up: {out}")
        time.sleep(0.1)


# --- rotation, and plain HTTP only where explicitly allowed ----------------------------


def test_rotated_server_certificate_is_accepted_without_client_change(site: Site) -> None:
    before = site.tls.server_cert.read_bytes()
    ctx = pinned(site)  # what the client pinned at set-up, before the rotation
    out = institution_cli(
        "tls",
        "issue",
        "--db",
        site.db_url,
        "--keys",
        str(site.keys),
        "--json",
        "--tls-name",
        "pay.example.org",
    )
    assert out.returncode == 0, out.stderr
    assert "pay.example.org" in json.loads(out.stdout)["names"]
    assert site.tls.server_cert.read_bytes() != before
    server = ServerProcess(site.db_url, site.keys, tls=True).start(verify=ctx)
    try:
        r = httpx.get(server.base_url + "/health", verify=ctx, timeout=10)
        assert r.status_code == 200
    finally:
        server.stop()


def _serve_fails(site: Site, *args: str, keys: Path | None = None) -> str:
    out = institution_cli(
        "serve",
        "--db",
        site.db_url,
        "--keys",
        str(keys or site.keys),
        "--port",
        str(free_port()),
        *args,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    return out.stderr.replace("\n", " ")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::"])
def test_plain_http_is_refused_off_loopback(site: Site, host: str) -> None:
    assert "loopback" in _serve_fails(site, "--plain-http", "--host", host)


def test_serve_without_a_certificate_is_refused(site: Site, tmp_path: Path) -> None:
    keys = tmp_path / "keys"  # a key directory with no .tls beside it
    msg = _serve_fails(site, keys=keys)
    assert "no TLS certificate" in msg and "tls init" in msg


def test_serve_refuses_a_broken_certificate_pair(site: Site, tmp_path: Path) -> None:
    ca, ca_key = site.ca()
    cert, _ = pki.make_server_cert(ca, ca_key)
    _, other_key = pki.make_server_cert(ca, ca_key)
    extra = write_pair(tmp_path, cert, other_key)  # the key does not match the certificate
    assert "tls_config_error" in _serve_fails(site, *extra)
    assert "tls_config_error" in _serve_fails(site, "--tls-cert", str(tmp_path / "cert.pem"))
    env_var = {"SAFESCAN_INSTITUTION_TLS__PLAIN_HTTP": "true"}
    out = subprocess.run(
        [sys.executable, "-m", "safescan.institution", "serve", "--db", site.db_url, *extra],
        env={**env(), **env_var},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "both configured" in out.stderr.replace("\n", " ")


# --- the client side's pinning ----------------------------------------------------------


def test_client_context_pins_exactly_one_ca(site: Site, tmp_path: Path) -> None:
    ctx = pki.client_context(site.tls.ca_cert, pki.ca_fingerprint(site.tls.ca_cert))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1  # the system's CAs are not trusted
    with pytest.raises(pki.TlsTrustError, match="not the CA pinned"):
        pki.client_context(site.tls.ca_cert, "00" * 32)
    with pytest.raises(pki.TlsTrustError, match="not a CA"):
        pki.client_context(site.tls.server_cert)  # a leaf is not a CA to pin
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(pki.TlsTrustError, match="not a PEM"):
        pki.client_context(tmp_path / "junk.pem")
    with pytest.raises(pki.TlsTrustError, match="cannot read"):
        pki.client_context(tmp_path / "missing.pem")


def test_no_verification_switched_off_anywhere() -> None:
    """No client in src/, tests/, bench/ or scripts/ turns certificate checks off."""
    root = Path(__file__).resolve().parents[2]
    patterns = ("verify=False", "CERT_NONE", "check_hostname = False", "_create_unverified")
    hits = []
    for folder in ("src", "tests", "bench", "scripts", "fuzz"):
        for path in (root / folder).rglob("*"):
            if path.suffix not in (".py", ".sh", ".js", ".toml") or path == Path(__file__):
                continue
            text = path.read_text(errors="replace")
            hits += [f"{path.relative_to(root)}: {p}" for p in patterns if p in text]
    assert not hits, hits
    assert os.environ.get("PYTHONHTTPSVERIFY") != "0"


def test_hop_record_says_tls_only_when_every_hop_was_pinned() -> None:
    """The demo's `"tls": true` comes from this record: one plain or unpinned hop makes it
    false, and no hop at all is not "everything was TLS"."""
    https, plain = (
        pki.Hop("https://127.0.0.1:1", True, True),
        pki.Hop("http://127.0.0.1:2", False, False),
    )
    unpinned = pki.Hop("https://127.0.0.1:3", True, False)
    assert pki.all_verified([https])
    assert not pki.all_verified([])
    assert not pki.all_verified([https, plain])
    assert not pki.all_verified([unpinned, https])
    before = dict(pki._HOPS)
    try:
        pki.record_hop("http://127.0.0.1:9/x")
        assert not pki.all_verified(pki.hops())
    finally:
        pki._HOPS.clear()
        pki._HOPS.update(before)


def test_write_private_replaces_a_file_whole_and_owner_only(tmp_path: Path) -> None:
    """Rotation and sealing overwrite key files: the old file (even world-readable) is
    replaced by a 0600 one with exactly the new bytes, and no temporary file is left."""
    key = tmp_path / "tls" / "server.key"
    key.parent.mkdir()
    key.write_bytes(b"old key, much longer than the new one\n" * 4)
    key.chmod(0o644)
    pki.write_private(key, b"new key\n")
    assert key.read_bytes() == b"new key\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == ["server.key"]
    fresh = tmp_path / "made" / "ca.key"
    pki.write_private(fresh, b"k")
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
