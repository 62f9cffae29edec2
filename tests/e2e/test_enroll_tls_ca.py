"""``safescan wallet enroll`` (the tool that personalises a key carrier) given a CA it cannot
use for the institution's HTTPS certificate (redteam: only the POS's ``--institution-ca`` and
the library clients were attacked; the carrier's enrollment was not).

Against the real institution over TLS, through ``--institution-ca FILE`` and
``$SAFESCAN_TLS_CA``: another CA (same name, another key), the institution's own CA re-signed
expired or not yet valid, the server's leaf certificate as the CA, a certificate of a foreign
CA's server, an empty file, a directory, ``/dev/zero``. Each is a typed JSON error
(``tls_trust_error`` for a file that is no CA, ``tls_verification_failed`` for a CA that does
not verify the server), exit 2, no traceback, nothing written, the carrier left blank and the
enrollment token unspent: the same carrier then enrolls with the same token and the right CA.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from safescan.web import pki
from tests.e2e.conftest import PIN, World


def _wallet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safescan.wallet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _resigned(tls: pki.TlsDir, passphrase: bytes, *, days: int) -> bytes:
    """The institution's own CA (same name, same key) with its validity moved ``days`` away
    (negative: expired)."""
    real = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    key = pki.load_ca_key(tls, passphrase)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.issuer)
        .public_key(real.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(days=1))
        .not_valid_after(start)
    )
    for ext in real.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def _bad_cas(world: World, tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (CA path, the error code expected)."""
    stack = world.stack
    other_ca, other_key = pki.make_ca()  # the very name of ours, another key
    (tmp / "other.pem").write_bytes(pki.cert_pem(other_ca))
    foreign_leaf, _ = pki.make_server_cert(other_ca, other_key)
    (tmp / "foreign-leaf.pem").write_bytes(pki.cert_pem(foreign_leaf))
    (tmp / "empty.pem").write_bytes(b"")
    (tmp / "cadir").mkdir()
    cases = {
        "another CA": (str(tmp / "other.pem"), "tls_verification_failed"),
        "foreign server certificate": (str(tmp / "foreign-leaf.pem"), "tls_trust_error"),
        "empty file": (str(tmp / "empty.pem"), "tls_trust_error"),
        "directory": (str(tmp / "cadir"), "tls_trust_error"),
        "device": ("/dev/zero", "tls_trust_error"),
    }
    cases["the server's own certificate"] = (str(stack.tls_dir.server_cert), "tls_trust_error")
    passphrase = stack.passphrase.encode()
    (tmp / "expired.pem").write_bytes(_resigned(stack.tls_dir, passphrase, days=-2))
    (tmp / "future.pem").write_bytes(_resigned(stack.tls_dir, passphrase, days=400))
    cases["our CA, expired"] = (str(tmp / "expired.pem"), "tls_verification_failed")
    cases["our CA, not yet valid"] = (str(tmp / "future.pem"), "tls_verification_failed")
    return cases


def test_an_unusable_ca_is_a_typed_error_and_spends_neither_carrier_nor_token(
    world: World, tmp_path: Path
) -> None:
    proc, carrier_url = world.stack.start_carrier("carrier-ca")
    try:
        admin = world.stack.need_admin()
        cid = world.stack.customer("Cai", fund=1_000)
        token = admin.enrollment_tokens.issue(cid).token
        pin_file = tmp_path / "pin"
        pin_file.write_text(PIN)
        root = admin_root_pin(world)
        clean_env = {k: v for k, v in os.environ.items() if k != pki.ENV_CA}
        n = 0
        # every bad CA through both channels (the option is read by the command, the variable
        # by the HTTPS client), each once with the root key pinned and once without; over the
        # 8 CAs each channel meets both pinnings 4 times (all pairs of the three choices, in 16
        # enrollments: the 32 of the full product each cost a wallet process, ~0.4 s of CPU)
        for i, (name, (ca, code)) in enumerate(_bad_cas(world, tmp_path).items()):
            for how, pinned in (("option", i % 2 == 0), ("variable", i % 2 == 1)):
                n += 1
                wallet_dir = tmp_path / f"w{n}"
                args = ["enroll", "--institution", world.base_url, "--carrier", carrier_url]
                args += ["--token", token, "--pin-file", str(pin_file), "--json"]
                args += ["--wallet-dir", str(wallet_dir)]
                if pinned:
                    args += ["--institution-key", root]
                env = dict(clean_env)
                if how == "option":
                    args += ["--institution-ca", ca]
                else:
                    env[pki.ENV_CA] = ca
                out = _wallet(*args, env=env)
                where = (name, how, pinned, out.stdout, out.stderr)
                assert out.returncode == 2, where
                assert "Traceback" not in out.stderr + out.stdout, where
                error = json.loads(out.stdout)["error"]
                assert error["code"] == code, where
                if how == "variable":
                    assert pki.ENV_CA in error["message"] or code != "tls_trust_error", where
                assert not (wallet_dir / "wallet.json").exists(), where
        # the carrier is still blank and the token unspent: they enroll now, with the right CA
        ok = _wallet(
            "enroll", "--institution", world.base_url, "--carrier", carrier_url,
            "--token", token, "--pin-file", str(pin_file), "--wallet-dir", str(tmp_path / "ok"),
            "--institution-ca", str(world.stack.tls_ca), env=clean_env,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        proc.stop()


def admin_root_pin(world: World) -> str:
    """``KID:HEX`` of the institution's root key (what an enrollment letter carries)."""
    listed = subprocess.run(
        [sys.executable, "-m", "safescan.institution", "root-keys", "--db", world.stack.db_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=world.stack.env(),
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()[0]
