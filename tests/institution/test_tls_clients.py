"""The POS and the wallet talk to an HTTPS institution, verifying it with the CA pinned at
set-up (`pos onboard --institution-ca`, `wallet enroll --institution-ca`), and refuse a server
their pin does not vouch for. Real `institution serve` and `safescan pos` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.client.admin import AdminClient
from safescan.client.http import InstitutionHttp
from safescan.client.public import fetch_trust
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey
from safescan.wallet.store import WalletConfig
from safescan.web import pki
from tests.institution.harness import ServerProcess, init_db

POS_PASS = "pos passphrase 123"
IBAN = "FR7630006000011234567890189"


@pytest.fixture(scope="module")
def https() -> Iterator[tuple[ServerProcess, str, Path]]:
    with tempfile.TemporaryDirectory(prefix="safescan-tlsc-") as d:
        tmp = Path(d)
        db = f"sqlite:///{tmp / 'i.db'}"
        token = init_db(db, tmp / "keys")
        server = ServerProcess(db, tmp / "keys", tls=True).start()
        try:
            yield server, token, tmp
        finally:
            server.stop()


def pos(*args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAFESCAN_POS_PASSPHRASE": POS_PASS, "SAFESCAN_ADMIN_TOKEN": token}
    env.pop("SAFESCAN_TLS_CA", None)
    return subprocess.run(
        [sys.executable, "-m", "safescan", "pos", *args, "--json"],
        cwd=tempfile.gettempdir(),  # `pos order` writes its QR code (PNG) in the directory
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def onboard(
    server: ServerProcess, token: str, config: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return pos(
        "onboard",
        "--institution",
        server.base_url,
        "--name",
        "TLS Cafe",
        "--city",
        "Lyon",
        "--country",
        "FR",
        "--mcc",
        "5814",
        "--settlement-account",
        IBAN,
        "--config",
        str(config),
        *extra,
        token=token,
    )


def test_pos_onboards_and_orders_over_https_with_the_pinned_ca(
    https: tuple[ServerProcess, str, Path], tmp_path: Path
) -> None:
    server, token, _ = https
    config = tmp_path / "pos.json"
    out = onboard(server, token, config, "--institution-ca", str(server.ca))
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(config.read_text())
    assert doc["institution_url"].startswith("https://")
    assert pki.fingerprint(pki.ca_from_pem(doc["tls_ca"])) == pki.ca_fingerprint(server.ca)
    made = pos("order", "--item", "Tea:1:250", "--no-wait", "--config", str(config))
    assert made.returncode == 0, made.stdout + made.stderr
    listed = pos("orders", "--config", str(config))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert len(json.loads(listed.stdout)["orders"]) == 1


def test_pos_refuses_an_institution_its_pin_does_not_vouch_for(
    https: tuple[ServerProcess, str, Path], tmp_path: Path
) -> None:
    server, token, _ = https
    # onboarding without a pin: the system's CAs do not know the private CA -> refused
    out = onboard(server, token, tmp_path / "a.json")
    assert out.returncode == 2 and not (tmp_path / "a.json").exists()
    assert "tls_verification_failed" in out.stdout
    # onboarding with another CA pinned (a man in the middle's, or a mix-up) -> refused
    other, _ = pki.make_ca()
    (tmp_path / "other.pem").write_bytes(pki.cert_pem(other))
    out = onboard(
        server, token, tmp_path / "b.json", "--institution-ca", str(tmp_path / "other.pem")
    )
    assert out.returncode == 2 and not (tmp_path / "b.json").exists()
    # a leaf certificate is not a CA to pin
    leaf = server.ca.with_name("server.pem")
    out = onboard(server, token, tmp_path / "c.json", "--institution-ca", str(leaf))
    assert out.returncode == 2 and "tls_trust_error" in out.stdout
    # a terminal set up correctly whose pinned CA is later swapped in its file -> refused
    good = tmp_path / "good.json"
    assert onboard(server, token, good, "--institution-ca", str(server.ca)).returncode == 0
    doc = json.loads(good.read_text())
    doc["tls_ca"] = pki.cert_pem(other).decode()
    good.write_text(json.dumps(doc))
    listed = pos("order", "--item", "Tea:1:250", "--no-wait", "--config", str(good))
    assert listed.returncode != 0
    assert "tls_verification_failed" in listed.stdout


def test_plain_http_url_off_loopback_is_refused_by_clients() -> None:
    with pytest.raises(pki.InsecureUrl):
        InstitutionHttp("http://192.0.2.10:8080")
    with pytest.raises(pki.InsecureUrl):
        InstitutionHttp("http://pay.example.org")


def test_wallet_configuration_pins_the_ca_for_its_institution(
    https: tuple[ServerProcess, str, Path], tmp_path: Path
) -> None:
    server, _, _ = https
    cfg = WalletConfig(
        institution_url=server.base_url,
        carrier_url="tcp://127.0.0.1:9",
        trust=TrustStore({1: SigningKey.generate().public_key}),
        carrier_serial=1,
        directory=tmp_path / "wallet",
        tls_ca=server.ca.read_text(),
    )
    cfg.save()
    loaded = WalletConfig.load(tmp_path / "wallet")  # pins the CA for its institution
    assert loaded.tls_ca == server.ca.read_text()
    with InstitutionHttp(loaded.institution_url) as remote:
        assert fetch_trust(remote).institution_keys
    hop = [h for h in pki.hops() if h.origin == pki.origin_of(server.base_url)]
    assert hop and hop[0].tls and hop[0].verified
    # the same wallet file with another CA: its institution is refused
    other, _ = pki.make_ca()
    doc = json.loads((tmp_path / "wallet" / "wallet.json").read_text())
    doc["tls_ca"] = pki.cert_pem(other).decode()
    (tmp_path / "wallet" / "wallet.json").write_text(json.dumps(doc))
    WalletConfig.load(tmp_path / "wallet")
    with InstitutionHttp(server.base_url) as remote, pytest.raises(SafescanError) as info:
        fetch_trust(remote)
    assert info.value.code == "tls_verification_failed"


def _admin_cli(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_")}
    env.update({"SAFESCAN_ADMIN_TOKEN": "adm_" + "A" * 43, **env_extra})
    return subprocess.run(
        [sys.executable, "-m", "safescan", "institution", "customer", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("https://[::1", None),  # unclosed IPv6 literal: a ValueError traceback before
        ("https://[::1:8080/", None),
        ("https://127.0.0.1:99999", None),  # port out of range: a traceback before
        ("https://127.0.0.1:eighty", None),
        ("ftp://127.0.0.1/", None),  # before: "cannot be reached (UnsupportedProtocol)"
        ("127.0.0.1:8080", None),
        ("https://", None),
        ("https://admin:hunter2-pw@127.0.0.1:1", "hunter2-pw"),  # before: echoed in the error
        ("https://hunter2-user@127.0.0.1:1", "hunter2-user"),
    ],
)
def test_malformed_institution_url_is_a_typed_error_and_never_echoes_credentials(
    url: str, secret: str | None
) -> None:
    """An institution URL (``$SAFESCAN_INSTITUTION_URL``, ``--institution``, a configuration
    file) that is not ``http(s)://host[:port]`` is ``invalid_url`` before any connection;
    credentials in it are refused and never printed."""
    r = _admin_cli({"SAFESCAN_INSTITUTION_URL": url})
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "ValueError" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["error"]["code"] == "invalid_url", doc
    if secret is not None:
        assert secret not in r.stdout + r.stderr
    with pytest.raises(pki.InvalidUrl):
        InstitutionHttp(url)


@pytest.mark.parametrize(
    "token",
    [
        "adm_abc\ndef",  # before: "cannot be reached (LocalProtocolError)", a wrong diagnosis
        "adm_abc\rX-Injected: 1",
        "adm_abc def",
        "adm_ab\x1b[2Jc",
        "adm_\u00e9t\u00e9",  # before: a UnicodeEncodeError traceback
        "adm_\u202eabc",
        "adm_" + "A" * 300,
    ],
)
def test_malformed_admin_token_is_refused_before_any_request_and_never_echoed(token: str) -> None:
    """A token that an HTTP header cannot carry (control characters, spaces, non-ASCII) or
    far too long is ``unauthenticated`` at once, with no request made and the token not
    shown; the URL points at a port nobody listens on, so a request would be unreachable."""
    r = _admin_cli(
        {"SAFESCAN_ADMIN_TOKEN": token, "SAFESCAN_INSTITUTION_URL": "https://127.0.0.1:1"}
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["error"]["code"] == "unauthenticated", doc
    assert "malformed" in doc["error"]["message"]
    assert token.strip() not in r.stdout + r.stderr
    with pytest.raises(SafescanError):
        AdminClient("https://127.0.0.1:1", token)


@pytest.mark.parametrize(
    "url", ["https://[::1", "https://127.0.0.1:99999", "ftp://x", "https://u:pw@127.0.0.1"]
)
def test_enrollment_refuses_a_malformed_institution_url_before_using_the_token(
    url: str, tmp_path: Path
) -> None:
    """``wallet enroll --institution URL``: the local input check refuses it as
    ``enrollment_input_invalid`` (the token stays unused), never a ``ValueError``."""
    from safescan.wallet.enroll_checks import EnrollmentInputError, check_inputs

    with pytest.raises(EnrollmentInputError, match="institution URL"):
        check_inputs(
            directory=tmp_path / "wallet",
            institution_url=url,
            carrier_url="tcp://127.0.0.1:7300",
            token="enr_" + "A" * 43,
            pin="1234",
            retry_limit=5,
            customer_id=None,
        )


def _bad_cas(tmp: Path) -> dict[str, str]:
    """``$SAFESCAN_TLS_CA`` / ``--institution-ca`` values that are no CA file."""
    (tmp / "empty.pem").write_bytes(b"")
    (tmp / "blank.pem").write_bytes(b"\n  \n")
    (tmp / "text.pem").write_text("not a certificate\n")
    (tmp / "der.cer").write_bytes(pki.cert_pem(pki.make_ca()[0])[30:90])
    (tmp / "cadir").mkdir()
    os.mkfifo(tmp / "fifo.pem")  # before: the client blocked forever opening it
    return {
        "empty file": str(tmp / "empty.pem"),
        "blank file": str(tmp / "blank.pem"),
        "text": str(tmp / "text.pem"),
        "garbage": str(tmp / "der.cer"),
        "directory": str(tmp / "cadir"),
        "fifo": str(tmp / "fifo.pem"),
        "device": "/dev/zero",  # before: read whole (memory) or a traceback
        "missing": str(tmp / "nope.pem"),
    }


@pytest.mark.parametrize("which", ["", " ", "empty file", "blank file", "text", "garbage",
                                   "directory", "fifo", "device", "missing"])  # fmt: skip
def test_an_unusable_tls_ca_is_a_clear_typed_error_for_every_client(
    which: str, tmp_path: Path
) -> None:
    """``$SAFESCAN_TLS_CA`` empty (before: silently the system's CAs, then "cannot be
    reached" from a certificate failure), blank, or naming an empty, non-PEM, directory,
    FIFO, device or missing file: ``tls_trust_error`` naming the variable and the problem,
    from the admin CLI and the clients the wallet and the POS are built on, before any
    connection; the POS's ``--institution-ca`` the same."""
    value = _bad_cas(tmp_path).get(which, which)
    r = _admin_cli({"SAFESCAN_INSTITUTION_URL": "https://127.0.0.1:1", "SAFESCAN_TLS_CA": value})
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    error = json.loads(r.stdout)["error"]
    assert error["code"] == "tls_trust_error", error
    assert "SAFESCAN_TLS_CA" in error["message"]
    old = os.environ.get(pki.ENV_CA)
    os.environ[pki.ENV_CA] = value
    try:
        for make in (
            lambda: InstitutionHttp("https://127.0.0.1:1"),
            lambda: AdminClient("https://127.0.0.1:1", "adm_" + "A" * 43),
        ):
            with pytest.raises(pki.TlsTrustError, match="SAFESCAN_TLS_CA"):
                make()
    finally:
        if old is None:
            os.environ.pop(pki.ENV_CA, None)
        else:
            os.environ[pki.ENV_CA] = old
    if value.strip():
        with pytest.raises(pki.TlsTrustError):
            pki.load_ca(Path(value))
        config = tmp_path / "pos.json"
        out = pos("onboard", "--institution", "https://127.0.0.1:1", "--name", "TLS Cafe",
                  "--city", "Lyon", "--country", "FR", "--mcc", "5814", "--settlement-account",
                  IBAN, "--config", str(config), "--institution-ca", value,
                  token="adm_" + "A" * 43)  # fmt: skip
        assert out.returncode == 2 and not config.exists(), out.stdout + out.stderr
        assert json.loads(out.stdout)["error"]["code"] == "tls_trust_error"
