"""The private CA's key at rest: ``institution init`` seals it under the institution's
passphrase (scrypt + AES-256-GCM, as the other key files); it opens only with that passphrase,
a tampered file or a wrong passphrase is a typed ``key_file_error`` that changes nothing, issuing
still works, and a site made by an older release (the CA key a clear 0600 PEM) still issues.
The server key stays a 0600 PEM (docs/operations.md, "TLS", says why)."""

from __future__ import annotations

import json
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from safescan.code.errors import KeyFileError
from safescan.web import pki
from tests.institution.harness import PASSPHRASE, ServerProcess, env, init_db, institution_run


@dataclass
class Site:
    db_url: str
    keys: Path

    @property
    def tls(self) -> pki.TlsDir:
        return pki.TlsDir(self.keys.with_name(self.keys.name + ".tls"))


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with tempfile.TemporaryDirectory(prefix="safescan-cakey-") as d:
        db_url = f"sqlite:///{Path(d) / 'institution.db'}"
        init_db(db_url, Path(d) / "keys")
        yield Site(db_url, Path(d) / "keys")


def _tls_cli(
    site: Site, *args: str, passphrase: str | None = PASSPHRASE
) -> subprocess.CompletedProcess[str]:
    e = env()
    e.pop("SAFESCAN_INSTITUTION_PASSPHRASE", None)
    if passphrase is not None:
        e["SAFESCAN_INSTITUTION_PASSPHRASE"] = passphrase
    cmd = ["tls", *args, "--db", site.db_url, "--keys", str(site.keys), "--json"]
    return institution_run(cmd, e)  # a process of its own, forked where the zygote fits


def _signed_by_ca(cert_file: Path, ca_file: Path) -> x509.Certificate:
    leaf = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    ca_key = pki.load_ca(ca_file).public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    return leaf


def test_init_seals_the_ca_key_and_holds_no_private_key_in_clear(site: Site) -> None:
    data = site.tls.ca_key.read_bytes()
    assert stat.S_IMODE(site.tls.ca_key.stat().st_mode) == 0o600
    assert data.startswith(b"-----BEGIN SAFESCAN ENCRYPTED PRIVATE KEY-----"), data[:60]
    for clear in (b"BEGIN PRIVATE KEY", b"BEGIN EC PRIVATE KEY", b"BEGIN ENCRYPTED PRIVATE KEY"):
        assert clear not in data
    with pytest.raises(ValueError):  # not a PEM key any library opens without the passphrase
        serialization.load_pem_private_key(data, None)
    key = pki.load_ca_key(site.tls, PASSPHRASE.encode())
    assert key.public_key() == pki.load_ca(site.tls.ca_cert).public_key()
    assert pki.ca_key_sealed(site.tls)
    shown = _tls_cli(site, "show", passphrase=None)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["ca_key_sealed"] is True


@pytest.mark.parametrize("passphrase", [None, b"", b"wrong passphrase", PASSPHRASE.encode() + b"x"])
def test_the_sealed_ca_key_needs_the_passphrase(site: Site, passphrase: bytes | None) -> None:
    with pytest.raises(KeyFileError) as info:
        pki.load_ca_key(site.tls, passphrase)
    assert info.value.code == "key_file_error"
    out = site.tls.path / "other"
    with pytest.raises(KeyFileError):
        pki.issue_server_files(
            site.tls, out / "c.pem", out / "k.pem", ["localhost"], passphrase=passphrase
        )
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_tampered_ca_key_file_is_refused(site: Site, tmp_path: Path, where: float) -> None:
    copy = pki.TlsDir(tmp_path)
    copy.ca_cert.write_bytes(site.tls.ca_cert.read_bytes())
    lines = site.tls.ca_key.read_bytes().split(b"\n")
    body = lines[1:-2]
    i = int(len(body) * where)
    row = bytearray(body[i])
    row[5] = ord("A") if row[5] != ord("A") else ord("B")  # one base64 character changed
    body[i] = bytes(row)
    copy.ca_key.write_bytes(b"\n".join([lines[0], *body, *lines[-2:]]))
    with pytest.raises(KeyFileError):
        pki.load_ca_key(copy, PASSPHRASE.encode())


@pytest.mark.parametrize("passphrase", [None, "wrong passphrase 1"])
def test_tls_issue_with_a_wrong_or_no_passphrase_is_refused_and_changes_nothing(
    site: Site, passphrase: str | None
) -> None:
    before = (site.tls.server_cert.read_bytes(), site.tls.server_key.read_bytes())
    out = _tls_cli(site, "issue", passphrase=passphrase)
    assert out.returncode == 2, out.stdout + out.stderr
    said = out.stdout + out.stderr
    assert "key_file_error" in said or "config_error" in said, said
    assert "wrong passphrase 1" not in said
    assert (site.tls.server_cert.read_bytes(), site.tls.server_key.read_bytes()) == before


def test_tls_issue_opens_the_sealed_ca_key_and_the_new_certificate_serves(site: Site) -> None:
    before = site.tls.server_cert.read_bytes()
    sealed = site.tls.ca_key.read_bytes()
    out = _tls_cli(site, "issue", "--tls-name", "pay.example.org")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pay.example.org" in json.loads(out.stdout)["names"]
    assert site.tls.server_cert.read_bytes() != before
    assert site.tls.ca_key.read_bytes() == sealed  # still sealed, untouched
    _signed_by_ca(site.tls.server_cert, site.tls.ca_cert)
    ctx = pki.client_context(site.tls.ca_cert)
    server = ServerProcess(site.db_url, site.keys, tls=True).start(verify=ctx)
    try:
        assert httpx.get(server.base_url + "/health", verify=ctx, timeout=10).status_code == 200
    finally:
        server.stop()


def test_a_site_with_a_clear_ca_key_from_an_older_release_still_issues(tmp_path: Path) -> None:
    """An older release wrote ca.key as a clear PEM: it still loads (no passphrase needed),
    ``tls issue`` still works, and ``serve`` presents the new certificate."""
    db_url = f"sqlite:///{tmp_path / 'institution.db'}"
    init_db(db_url, tmp_path / "keys")
    site = Site(db_url, tmp_path / "keys")
    key = pki.load_ca_key(site.tls, PASSPHRASE.encode())
    pki.write_private(site.tls.ca_key, pki.key_pem(key))  # as the older release left it
    assert not pki.ca_key_sealed(site.tls)
    assert pki.load_ca_key(site.tls).public_key() == key.public_key()
    shown = _tls_cli(site, "show", passphrase=None)
    assert json.loads(shown.stdout)["ca_key_sealed"] is False  # the operator can tell
    before = site.tls.server_cert.read_bytes()
    out = _tls_cli(site, "issue", passphrase=None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert site.tls.server_cert.read_bytes() != before
    _signed_by_ca(site.tls.server_cert, site.tls.ca_cert)
    ctx = pki.client_context(site.tls.ca_cert)
    server = ServerProcess(db_url, site.keys, tls=True).start(verify=ctx)
    try:
        assert httpx.get(server.base_url + "/health", verify=ctx, timeout=10).status_code == 200
    finally:
        server.stop()


def test_tls_init_refuses_a_passphrase_that_is_not_the_institutions(tmp_path: Path) -> None:
    """``tls init`` on an institution without TLS: a mistyped passphrase would seal the CA key
    under a passphrase nobody knows; it is refused and nothing is written."""
    db_url = f"sqlite:///{tmp_path / 'institution.db'}"
    init_db(db_url, tmp_path / "keys")
    site = Site(db_url, tmp_path / "keys")
    made = site.tls.path
    made.rename(tmp_path / "old-tls")  # an institution from before TLS existed
    out = _tls_cli(site, "init", passphrase="not the institution's")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "key_file_error" in out.stdout + out.stderr
    assert not site.tls.ca_key.exists() and not site.tls.ca_cert.exists()
    out = _tls_cli(site, "init")
    assert out.returncode == 0, out.stdout + out.stderr
    assert pki.ca_key_sealed(site.tls)
    pki.issue_server_files(
        site.tls, tmp_path / "pos.pem", tmp_path / "pos.key", ["localhost"],
        passphrase=PASSPHRASE.encode(),
    )  # fmt: skip
    _signed_by_ca(tmp_path / "pos.pem", site.tls.ca_cert)


def test_tls_seal_seals_an_older_sites_clear_ca_key(tmp_path: Path) -> None:
    """``tls seal``: a wrong passphrase (or none) is refused and leaves the clear key as it
    was; the right one seals it (the same key, now only with the passphrase); again: nothing
    to do, but a wrong passphrase is still refused."""
    db_url = f"sqlite:///{tmp_path / 'institution.db'}"
    init_db(db_url, tmp_path / "keys")
    site = Site(db_url, tmp_path / "keys")
    key = pki.load_ca_key(site.tls, PASSPHRASE.encode())
    pki.write_private(site.tls.ca_key, pki.key_pem(key))  # as an older release left it
    clear = site.tls.ca_key.read_bytes()
    for wrong in (None, "wrong passphrase 2", PASSPHRASE + " "):
        out = _tls_cli(site, "seal", passphrase=wrong)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "key_file_error" in out.stdout or "config_error" in out.stdout, out.stdout
        assert site.tls.ca_key.read_bytes() == clear  # nothing changed
    out = _tls_cli(site, "seal")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["sealed_now"] is True
    assert pki.ca_key_sealed(site.tls)
    data = site.tls.ca_key.read_bytes()
    assert data.startswith(b"-----BEGIN SAFESCAN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(ValueError):  # no clear PEM key left in the file
        serialization.load_pem_private_key(data, None)
    assert pki.load_ca_key(site.tls, PASSPHRASE.encode()).public_key() == key.public_key()
    with pytest.raises(KeyFileError):
        pki.load_ca_key(site.tls)
    sealed = site.tls.ca_key.read_bytes()
    out = _tls_cli(site, "seal")
    assert out.returncode == 0 and json.loads(out.stdout)["sealed_now"] is False
    out = _tls_cli(site, "seal", passphrase="wrong passphrase 3")
    assert out.returncode == 2 and "key_file_error" in out.stdout
    assert site.tls.ca_key.read_bytes() == sealed
    out = _tls_cli(site, "issue")
    assert out.returncode == 0, out.stdout + out.stderr
    _signed_by_ca(site.tls.server_cert, site.tls.ca_cert)
