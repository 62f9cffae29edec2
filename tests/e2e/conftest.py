"""End-to-end fixtures: a real institution, key carriers and POS processes on 127.0.0.1.

One institution (SQLite) serves the whole session; each test that breaks a carrier (kills or
destroys it) gets its own carrier and wallet from :func:`fresh_party`.

A carrier's name is its state file (``<name>.eeprom``) and its wallet's directory in the
stack's work directory, and those persist for the session: two tests that used the same name
met through them (two "erin"s). So every carrier started here for a stack claims its name
first (:func:`start_new_carrier`, :func:`new_party`), and a name used twice in one stack is
refused at once with :class:`CarrierNameTaken`; ``test_party_names.py`` checks the names
written in the tests too, whatever worker each test runs on.
"""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safescan.client.admin import AdminClient
from safescan.demo import DEMO_PIN, Stack
from safescan.merchant.config import ENV_PASSPHRASE as ENV_POS_PASSPHRASE
from safescan.merchant.config import PosConfig
from safescan.procs import ManagedProcess
from safescan.web import pki
from tests.institution.harness import institution_run

#: the carrier names claimed in each stack (by its work directory), and by which test
_CLAIMED: dict[Path, dict[str, str]] = {}


class CarrierNameTaken(Exception):
    """A carrier (party) name was already used with this stack in this session."""


def claim_carrier_name(stack: Stack, name: str) -> None:
    """Claim ``name`` (a carrier's name, e.g. ``carrier-erin``) for the caller in ``stack``;
    :class:`CarrierNameTaken` if any test of the session claimed it before."""
    claimed = _CLAIMED.setdefault(stack.workdir, {})
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    if name in claimed:
        raise CarrierNameTaken(
            f"carrier name {name!r} is already used in this session (by {claimed[name]}); its "
            f"state files persist in {stack.workdir}: give {test} a name no other test uses"
        )
    claimed[name] = test


def start_new_carrier(
    stack: Stack, name: str, *, model: str = "plain"
) -> tuple[ManagedProcess, str]:
    """``stack.start_carrier`` for a new carrier: its name claimed first (a restart of the same
    carrier calls ``stack.start_carrier`` itself)."""
    claim_carrier_name(stack, name)
    return stack.start_carrier(name, model=model)


PIN = DEMO_PIN
FUNDS = 50_000


@dataclass
class Party:
    """A customer with an enrolled key carrier and a wallet directory."""

    customer_id: str
    carrier: ManagedProcess
    carrier_url: str
    wallet_dir: Path


@dataclass
class World:
    """The running deployment."""

    stack: Stack
    pos: PosConfig
    pos_path: Path
    alice: Party

    @property
    def base_url(self) -> str:
        """The institution."""
        return self.stack.base_url

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a raw httpx client of the institution passes as ``verify``: the pinned CA."""
        return pki.verify_for(self.base_url)


def new_party(stack: Stack, name: str, fund: int = FUNDS) -> Party:
    """A funded customer with a fresh carrier process, enrolled (``carrier-<name>``, a name
    no other test of the session used: :class:`CarrierNameTaken`)."""
    proc, url = start_new_carrier(stack, f"carrier-{name}")
    try:
        cid = stack.customer(name.title(), fund=fund)
        wallet_dir = stack.enroll_wallet(cid, url, name=f"wallet-{name}")
    except BaseException:
        proc.stop()  # a carrier left running would hold its state file
        raise
    return Party(cid, proc, url, wallet_dir)


def rotate_and_restart(
    stack: Stack, retire_old_in: int, *serve_args: str, epoch: bool = False
) -> None:
    """``institution rotate-scheme-key --retire-old-in N`` (the static-code key), or with
    ``epoch`` ``institution rotate-epoch`` (the dynamic codes' scheme-key epoch, #14), then
    restart the server on the same address (wallets and POS configurations keep working) with
    ``serve_args`` added."""
    rotate = (
        ["rotate-epoch"] if epoch else ["rotate-scheme-key", "--retire-old-in", str(retire_old_in)]
    )
    out = stack.run_cli([*rotate, "--db", stack.db_url, "--keys", str(stack.keys_dir)], stack.env())
    assert out.returncode == 0, out.stderr
    [p for p in stack.processes if p.name.startswith("institution")][-1].stop()
    port = int(stack.base_url.rsplit(":", 1)[1])
    name = f"institution-{len(stack.processes) + 1}"
    proc = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "safescan.institution",
            "serve",
            "--db",
            stack.db_url,
            "--keys",
            str(stack.keys_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *([] if stack.tls else ["--plain-http"]),
            *serve_args,
        ],
        env=stack.env(),
        log=stack.workdir / f"{name}.log",
    )
    stack.processes.append(proc.start())
    stack.base_url = f"{'https' if stack.tls else 'http'}://127.0.0.1:{port}"
    proc.wait_http(stack.base_url + "/health", timeout=60, verify=pki.verify_for(stack.base_url))
    if stack.admin is not None:
        stack.admin.close()
    stack.admin = AdminClient(stack.base_url, stack.admin_token)


def chromium_trusts(stack: Stack) -> list[str]:
    """Chromium options accepting the institution's HTTPS: Chromium does not take a CA file, so
    it is given the SHA-256 of the server certificate's public key (the one key it accepts
    besides the system's CAs: a pin, not verification switched off)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if not stack.base_url.startswith("https://"):
        return []
    cert = x509.load_pem_x509_certificate(stack.tls_dir.server_cert.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return [f"--ignore-certificate-errors-spki-list={pin}"]


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """Institution + merchant + Alice (funded, enrolled), stopped at the end of the session."""
    tmp = Path(tempfile.mkdtemp(prefix="safescan-e2e-"))
    # the institution over HTTPS (every client pins the CA `init` made); the web POS pages are
    # driven by Chromium, which does not know the private CA: they stay on loopback HTTP here
    # (the demo and tests/web/test_https_servers.py run the web POS over HTTPS)
    stack = Stack(tmp, pos_tls=False, run_cli=institution_run)
    # the POS command lines the tests run decrypt the POS key with the stack's passphrase
    saved = os.environ.get(ENV_POS_PASSPHRASE)
    os.environ[ENV_POS_PASSPHRASE] = stack.passphrase
    try:
        stack.begin_institution_init()
        # the webhook test's receiver listens on 127.0.0.1 over http: allowed explicitly
        stack.start_institution(extra=["--webhook-allow", "127.0.0.1", "--webhook-http"])
        pos = stack.onboard_merchant()
        alice = new_party(stack, "alice")
        yield World(stack, pos, tmp / "pos.json", alice)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if saved is None:
            os.environ.pop(ENV_POS_PASSPHRASE, None)
        else:
            os.environ[ENV_POS_PASSPHRASE] = saved


@pytest.fixture
def fresh_party(world: World) -> Iterator[Callable[[str], Party]]:
    """Make another customer with its own carrier (for tests that break carriers); a name
    used before in the session raises :class:`CarrierNameTaken` at once."""
    made: list[Party] = []

    def make(name: str) -> Party:
        party = new_party(world.stack, name)
        made.append(party)
        return party

    yield make
    for party in made:
        party.carrier.stop()
