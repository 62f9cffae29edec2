"""A web POS site on disk for the server tests of this folder: a terminal's configuration
(sealed under :data:`PASS`, one staff account) and a private CA with a server certificate."""

from __future__ import annotations

import os
from pathlib import Path

from safescan.code.certs import TrustStore
from safescan.code.keys import SigningKey
from safescan.merchant.config import PosConfig
from safescan.merchant.staff import StaffStore
from safescan.web import pki

PASS = "pos passphrase 123"  # the terminal configuration's passphrase
STAFF = ("alice", "correct horse battery")  # its one staff account


def pos_site(d: Path) -> tuple[Path, pki.TlsDir]:
    """In ``d``: ``pos.json`` (an institution that is never asked, port 9) with the staff
    account, and the CA and server certificate in ``tls/``."""
    cfg = PosConfig(
        institution_url="https://127.0.0.1:9",
        merchant_id="M0000000001",
        api_seed=os.urandom(32),
        trust=TrustStore({1: SigningKey.generate().public_key}),
    )
    path = cfg.save(d / "pos.json", passphrase=PASS.encode())
    StaffStore.for_config(path).add(*STAFF)
    return path, pki.create_tls_dir(pki.TlsDir(d / "tls"))
