"""Merchant-signed codes end to end: real institution, real key carrier processes, real POS CLI.

#13.1: a merchant with a code-signing certificate puts another merchant's identity (or parts of
it) in its code. The card refuses to open it, the wallet refuses before any question, the
institution refuses to pay it, and no money moves.

#14: the POS seals merchant-signed codes itself with its certified key and the *published*
scheme public key only, offline (the institution unreachable from the POS), and the institution
pays each once; a code sealed to an older scheme key still pays until that key retires.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from safescan.carrier.client import CarrierClient, CodeContents
from safescan.carrier.errors import CodeRefused
from safescan.carrier.testing import DEFAULT_MERCHANT, LocalInstitution
from safescan.client import AdminClient
from safescan.code import Certificate, Merchant, SigningKey, decode_text
from safescan.code.certs import TrustStore
from safescan.code.keyupdate import is_epoch_kid
from safescan.code.schemelist import SchemeKeyList
from safescan.demo import Stack
from safescan.merchant.client import MerchantApi
from safescan.merchant.config import PosConfig
from safescan.wallet.certified import check_certified_merchant
from safescan.wallet.errors import CodeRefusedByWallet
from safescan.wallet.flow import Wallet
from safescan.web.pki import verify_for
from tests.e2e.conftest import PIN, Party, World, new_party, rotate_and_restart
from tests.e2e.test_threats import attacker_carrier, authorization, balance, institution
from tests.forgery import dynamic_body, forge, identity_swaps, inline_identity
from tests.institution.harness import institution_run
from tests.institution.pg import free_port

PASSPHRASE = "pos-seal-passphrase-1"


# --- helpers ----------------------------------------------------------------------------------


def _pos(
    stack: Stack, *args: str, config: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``safescan pos ARGS --config CONFIG`` as the merchant would run it."""
    env = {**stack.env(), "SAFESCAN_PASSPHRASE": PASSPHRASE}
    out = subprocess.run(
        [sys.executable, "-m", "safescan", "pos", *args, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


def _seal_here(stack: Stack, config: Path, png: Path) -> str:
    """``pos order --seal-here`` (no waiting); returns the code decoded from the PNG written."""
    _pos(
        stack,
        "order",
        "--seal-here",
        "--item",
        "Beer:1:450",
        "--no-wait",
        "--png",
        str(png),
        config=config,
    )
    return _code_from_png(png)


def _json_lines(out: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _certified(stack: Stack, config: Path) -> tuple[SigningKey, Certificate]:
    """The terminal's code-signing key and certificate, as `pos seal-setup` left them."""
    seal_dir = config.with_name(config.stem + "-seal")
    key = SigningKey.load(seal_dir / "code-signing.key", PASSPHRASE.encode())
    return key, Certificate.from_bytes((seal_dir / "certificate.cbor").read_bytes())


def _published(base_url: str, trust: TrustStore) -> SchemeKeyList:
    doc = httpx.get(base_url + "/v1/keys", timeout=30, verify=verify_for(base_url)).json()
    return SchemeKeyList.from_bytes(base64.b64decode(doc["scheme_key_list"]), trust)


@contextlib.contextmanager
def _offline(config: Path) -> Iterator[Path]:
    """The POS configuration pointing at an address where nothing listens (the same key cache
    and journal: only the institution is gone), restored afterwards."""
    saved = config.read_text()
    doc = json.loads(saved)
    doc["institution_url"] = f"http://127.0.0.1:{free_port()}"
    config.write_text(json.dumps(doc))
    try:
        yield config
    finally:
        config.write_text(saved)


def _wallet_refuses(wallet_dir: Path, code: str) -> str:
    """The wallet refuses ``code`` before asking anything; returns its reason."""
    with Wallet.load(wallet_dir) as wallet, pytest.raises(CodeRefusedByWallet) as info:
        wallet.open(code).close()
    return info.value.reason


def _refused_everywhere(world: World, party: Party, code: str) -> str:
    """The wallet (before any question), the card itself and the institution all refuse."""
    with Wallet.load(party.wallet_dir) as wallet:
        with pytest.raises(CodeRefusedByWallet) as by_wallet:
            wallet.open(code).close()
        trust, _ = wallet.trust()
    with CarrierClient.connect(party.carrier_url) as card:
        card.open_session(trust)
        with pytest.raises(CodeRefused) as by_card:
            card.open_code(code)
    with institution(world) as w:
        status = w.http.post("/v1/codes/status", json={"code": code})
    assert status.status_code in (400, 422), status.text
    assert status.json()["error"]["code"] == by_card.value.error_code
    assert by_wallet.value.reason == by_card.value.error_code
    return by_card.value.error_code


@dataclass
class Kiosk:
    """A second merchant (the attacker) whose POS has set up local sealing."""

    config: Path
    pos: PosConfig
    key: SigningKey
    cert: Certificate


@pytest.fixture(scope="module")
def kiosk(world: World) -> Kiosk:
    pos = world.stack.onboard_merchant("Kiosk Est", "Lille", config_name="kiosk-est.json")
    config = world.stack.workdir / "kiosk-est.json"
    setup = _json_lines(_pos(world.stack, "seal-setup", "--json", config=config))[0]
    key, cert = _certified(world.stack, config)
    assert setup["certificate"]["serial"] == cert.serial
    assert cert.merchant == Merchant(pos.merchant_id, "Kiosk Est", "Lille", "FR", 5814)
    return Kiosk(config, pos, key, cert)


def _victim(world: World) -> Merchant:
    return Merchant(world.pos.merchant_id, "Café Lumière", "Paris", "FR", 5814)


# --- #13.1: identity swaps --------------------------------------------------------------------


SWAPS = list(identity_swaps(DEFAULT_MERCHANT, Merchant("v", "Boulangerie", "Paris", "BE", 1)))


@pytest.mark.parametrize("swap", SWAPS)
def test_another_merchants_identity_in_a_merchant_signed_code_is_refused(
    world: World, kiosk: Kiosk, swap: str
) -> None:
    assert kiosk.cert.merchant is not None
    shown = identity_swaps(kiosk.cert.merchant, _victim(world))[swap]
    now = int(time.time())
    scheme = _published(world.base_url, world.pos.trust).for_sealing(now, now + 300)
    body = inline_identity(dynamic_body(kiosk.cert, total=880, now=now), shown)
    code = _text(forge(kiosk.cert.to_bytes(), body, kiosk.key, scheme))
    before = balance(world, world.alice.customer_id)
    assert _refused_everywhere(world, world.alice, code) == "malformed_code"
    with institution(world) as w:  # a modified carrier that signs anything: still refused
        mallory = w.customer({"EUR": 5_000})
        soft = attacker_carrier(w, mallory)
        for mid in {shown.id, kiosk.pos.merchant_id}:
            auth = authorization(soft, code, merchant_id=mid, order_id=str(body[1]), amount=880)
            r = w.pay(code, auth)
            assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_code"
        assert balance(world, mallory) == 5_000
    assert balance(world, world.alice.customer_id) == before


def test_referencing_the_victims_certificate_or_signing_with_anothers_key_is_refused(
    world: World, kiosk: Kiosk
) -> None:
    """A cert of merchant A with a code of merchant B, both ways round."""
    victim_key = SigningKey.generate()
    with MerchantApi(world.pos) as api:
        victim_cert = Certificate.from_bytes(api.certificates.create(victim_key.public_key.raw, 30))
    now = int(time.time())
    scheme = _published(world.base_url, world.pos.trust).for_sealing(now, now + 300)
    # the kiosk's certificate, the body pointing at the victim's certificate serial
    body = dynamic_body(kiosk.cert, now=now)
    body[0] = victim_cert.serial
    code = _text(forge(kiosk.cert.to_bytes(), body, kiosk.key, scheme))
    assert _refused_everywhere(world, world.alice, code) == "signature_invalid"
    # the victim's certificate (public: it is in every code the victim seals), kiosk's key
    code = _text(
        forge(victim_cert.to_bytes(), dynamic_body(victim_cert, now=now), kiosk.key, scheme)
    )
    assert _refused_everywhere(world, world.alice, code) == "signature_invalid"


def test_revoked_merchant_cannot_seal_and_its_codes_are_refused(world: World) -> None:
    """A certificate of a revoked merchant: refused by the card (revocation list), the wallet
    and the institution; the POS itself stops sealing once it learns of it."""
    world.stack.onboard_merchant("Marché Noir", "Nantes", config_name="noir.json")
    config = world.stack.workdir / "noir.json"
    _pos(world.stack, "seal-setup", config=config)
    made = _pos(
        world.stack,
        "order",
        "--seal-here",
        "--item",
        "Tea:1:300",
        "--no-wait",
        "--json",
        "--png",
        str(world.stack.workdir / "noir.png"),
        config=config,
    )
    code = _json_lines(made)[0]["code"]
    pos = PosConfig.load(config)
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        assert admin.merchants.revoke(pos.merchant_id).status == "revoked"
    assert _wallet_refuses(world.alice.wallet_dir, code) == "certificate_revoked"
    with institution(world) as w:
        status = w.http.post("/v1/codes/status", json={"code": code}).json()
        assert status["state"] == "revoked"
    # the card has the newest list now (the wallet delivered it): it refuses on its own
    with Wallet.load(world.alice.wallet_dir) as wallet:
        trust = TrustStore(dict(wallet.config.trust.institution_keys))
    with CarrierClient.connect(world.alice.carrier_url) as card:
        card.open_session(trust)
        with pytest.raises(CodeRefused) as by_card:
            card.open_code(code)
    assert by_card.value.error_code == "certificate_revoked"
    # the POS refreshes (online), sees its certificate revoked, cannot get another: no code
    (config.with_name("noir-seal") / "checked_at").write_text("0")  # refresh is due
    again = _pos(
        world.stack,
        "order",
        "--seal-here",
        "--item",
        "Tea:1:300",
        "--no-wait",
        config=config,
        check=False,
    )
    assert again.returncode == 2 and "revoked" in again.stderr


def _code_from_png(path: Path) -> str:
    from safescan.code import qr

    return qr.decode_image(path)


def _text(binary: bytes) -> str:
    from safescan.code import encode_text

    return encode_text(binary)


def test_wallet_rechecks_what_the_card_says_against_the_certificate() -> None:
    """Defence in depth: a card (or firmware) that showed another identity than its certificate
    names is caught by the wallet under its own pinned keys."""
    inst = LocalInstitution.create()
    issuer = inst.merchant_issuer()
    assert issuer.certificate is not None
    honest = CodeContents(
        kind=1,  # type: ignore[arg-type]
        merchant=DEFAULT_MERCHANT,
        issuer="merchant",
        issuer_kid=inst.kid,
        certificate_serial=issuer.certificate.serial,
        order_id="o-1",
        items=(),
        total=100,
        currency=978,
        issued_at=inst.now,
        expires_at=inst.now + 300,
        warnings=(),
        digest=bytes(32),
        scheme_kid=inst.scheme.kid,
        certificate=issuer.certificate.to_bytes(),
    )
    check_certified_merchant(honest, inst.trust, now=inst.now)
    victim = Merchant("m-2002", "Boulangerie Moreau", "Paris", "BE", 5814)
    lies = {
        f"shown {k}": replace(honest, merchant=v)
        for k, v in identity_swaps(DEFAULT_MERCHANT, victim).items()
    }
    lies["no certificate"] = replace(honest, certificate=None)
    lies["another serial named"] = replace(honest, certificate_serial=issuer.certificate.serial + 1)
    other = inst.merchant_issuer(victim)
    assert other.certificate is not None
    lies["victim's certificate"] = replace(honest, certificate=other.certificate.to_bytes())
    for what, contents in lies.items():
        with pytest.raises(CodeRefusedByWallet):
            check_certified_merchant(contents, inst.trust, now=inst.now)
            raise AssertionError(what)
    revoked = TrustStore(dict(inst.trust.institution_keys), frozenset({issuer.certificate.serial}))
    with pytest.raises(CodeRefusedByWallet) as info:
        check_certified_merchant(honest, revoked, now=inst.now)
    assert info.value.reason == "certificate_revoked"


# --- #14: the POS seals by itself -------------------------------------------------------------


def test_pos_seals_offline_and_the_code_pays_exactly_once(
    world: World, kiosk: Kiosk, fresh_party: Any
) -> None:
    png = world.stack.workdir / "offline.png"
    with _offline(kiosk.config) as offline:
        made = _pos(
            world.stack,
            "order",
            "--seal-here",
            "--item",
            "Waffle:2:250",
            "--item",
            "Tea:1:300",
            "--no-wait",
            "--json",
            "--png",
            str(png),
            config=offline,
        )
        # waiting for the payment needs the institution: the POS says so, never "not paid"
        waited = _pos(
            world.stack,
            "order",
            "--seal-here",
            "--item",
            "Tea:1:300",
            "--json",
            "--png",
            str(world.stack.workdir / "w.png"),
            config=offline,
            check=False,
        )
        # a reference lives with a precreated order at the institution: refused, not dropped
        referenced = _pos(
            world.stack,
            "order",
            "--seal-here",
            "--item",
            "Tea:1:300",
            "--reference",
            "table-4",
            "--no-wait",
            config=offline,
            check=False,
        )
    assert referenced.returncode == 2 and "--reference" in referenced.stderr
    order = _json_lines(made)[0]
    assert order["sealed_here"] is True and order["order_id"].startswith("L-")
    code = _code_from_png(png)  # what the customer scans
    assert code == order["code"]
    assert decode_text(code)[2] == _published(world.base_url, world.pos.trust).current_kid
    assert waited.returncode == 3
    assert _json_lines(waited)[-1]["event"] == "unwatched"
    before = balance(world, world.alice.customer_id)
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(code) as offer:
        shown = offer.describe()
        assert shown["issuer"] == "merchant" and shown["total"] == 800
        assert shown["merchant"]["name"] == "Kiosk Est" and shown["merchant"]["city"] == "Lille"
        assert shown["certificate_serial"] == kiosk.cert.serial
        paid = offer.pay(PIN)
    assert paid.receipt.order_id == order["order_id"] and paid.receipt.amount == 800
    assert balance(world, world.alice.customer_id) == before - 800
    # exactly once: the same wallet, another customer's wallet, a modified carrier
    assert _wallet_refuses(world.alice.wallet_dir, code) == "already_paid"
    bob: Party = fresh_party("bob-sealed")
    bob_before = balance(world, bob.customer_id)
    with Wallet.load(bob.wallet_dir) as wallet, pytest.raises(CodeRefusedByWallet) as by_bob:
        wallet.open(code).close()
    assert by_bob.value.reason == "already_paid"
    with institution(world) as w:
        soft = attacker_carrier(w, bob.customer_id)
        auth = authorization(
            soft, code, merchant_id=kiosk.pos.merchant_id, order_id=order["order_id"], amount=800
        )
        r = w.pay(code, auth)
        assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_payable"
    assert balance(world, bob.customer_id) == bob_before
    assert balance(world, world.alice.customer_id) == before - 800
    # back online: the POS learns of the payment
    orders = _json_lines(_pos(world.stack, "orders", "--json", config=kiosk.config))[0]["orders"]
    row = next(o for o in orders if o["order_id"] == order["order_id"])
    assert row["state"] == "PAID" and row["payment_id"] == paid.receipt.payment_id


def test_ctrl_c_withdraws_a_terminal_sealed_code(world: World, kiosk: Kiosk) -> None:
    """Online, Ctrl-C on `pos order --seal-here` closes the order at the institution (with the
    code, the only way it knows the order): the code is then refused before any question."""
    env = {**world.stack.env(), "SAFESCAN_PASSPHRASE": PASSPHRASE}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # Ctrl-C as at a terminal: a test run started in the background inherits SIGINT
            # ignored (POSIX, without job control), and Python then never raises it
            "import runpy, signal, sys;"
            " signal.signal(signal.SIGINT, signal.default_int_handler);"
            " sys.argv[0] = 'safescan';"
            " runpy.run_module('safescan', run_name='__main__', alter_sys=True)",
            "pos",
            "order",
            "--seal-here",
            "--item",
            "Tea:1:300",
            "--json",
            "--png",
            str(world.stack.workdir / "cancel.png"),
            "--config",
            str(kiosk.config),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        order = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "cancelled" in err, err
    assert _wallet_refuses(world.alice.wallet_dir, order["code"]) == "order_closed"


def test_code_make_with_a_merchant_key_needs_no_institution_key_directory(
    world: World, kiosk: Kiosk, tmp_path: Path
) -> None:
    seal_dir = kiosk.config.with_name(kiosk.config.stem + "-seal")
    trust = tmp_path / "trust.json"
    trust.write_text(
        json.dumps(
            {
                "type": "safescan-trust",
                "institution_keys": {
                    str(k): v.raw.hex() for k, v in world.pos.trust.institution_keys.items()
                },
            }
        )
    )
    order = tmp_path / "order.json"
    order.write_text(
        json.dumps(
            {
                "items": [{"name": "Soup", "quantity": 1, "unit_price": 650}],
                "currency": "EUR",
                "order_id": "CLI-" + os.urandom(4).hex(),
            }
        )
    )
    env = {**world.stack.env(), "SAFESCAN_PASSPHRASE": PASSPHRASE}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "safescan",
            "code",
            "make",
            str(order),
            "--merchant-key",
            str(seal_dir / "code-signing.key"),
            "--merchant-cert",
            str(seal_dir / "certificate.cbor"),
            "--trust",
            str(trust),
            "--scheme-keys",
            str(seal_dir / "scheme-keys.cbor"),
            "--out",
            str(tmp_path / "code"),
        ],
        env={k: v for k, v in env.items() if k != "SAFESCAN_INSTITUTION_KEYS"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    code = (tmp_path / "code.txt").read_text().strip()
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(code) as offer:
        assert offer.describe()["merchant"]["name"] == "Kiosk Est"
        assert offer.pay(PIN).receipt.amount == 650


# --- #14: an older scheme key, until it retires -----------------------------------------------


@dataclass
class Rotating:
    """A separate institution whose scheme key rotates during the test."""

    stack: Stack
    party: Party
    config: Path


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotating]:
    stack = Stack(tmp_path_factory.mktemp("rotating"), run_cli=institution_run)
    try:
        stack.begin_institution_init()
        stack.start_institution()
        stack.onboard_merchant("Old Key Bar", "Berlin", config_name="bar.json")
        party = new_party(stack, "ola")  # personalised with scheme key 1
        config = stack.workdir / "bar.json"
        _pos(stack, "seal-setup", config=config)  # caches the list: key 1 current
        yield Rotating(stack, party, config)
    finally:
        stack.stop()


def _cached_kid(stack: Stack, config: Path) -> int:
    """``pos seal-setup --json``: the scheme key the terminal now seals dynamic codes to."""
    kid = _json_lines(_pos(stack, "seal-setup", "--json", config=config))[0]["scheme_key"]["kid"]
    assert isinstance(kid, int)
    return kid


def test_code_sealed_to_an_old_scheme_key_pays_until_that_key_retires(rotating: Rotating) -> None:
    """Since #14 terminals seal dynamic codes to the current scheme-key epoch. Codes a terminal
    sealed offline to an older epoch's key pay: epochs retire on schedule, at least 7 days +
    1 h after they end, later than any dynamic code expires (a terminal never seals to a key
    that would retire under its code, and a retired key's codes are refused: unit tests in
    threat row 46). Rotating the static-code key changes nothing for dynamic codes."""
    stack, ola, config = rotating.stack, rotating.party, rotating.config
    first = _cached_kid(stack, config)
    assert is_epoch_kid(first)
    rotate_and_restart(stack, 86400)  # the static-code key: not what dynamic codes use
    assert _cached_kid(stack, config) == first
    rotate_and_restart(stack, 0, epoch=True)  # the next epoch starts
    with _offline(config) as offline:
        codes = [_seal_here(stack, offline, stack.workdir / f"old-{n}.png") for n in range(2)]
    assert [decode_text(c)[2] for c in codes] == [first, first]  # the cached key, not the newest
    before = balance(stack, ola.customer_id)
    with Wallet.load(ola.wallet_dir) as wallet, wallet.open(codes[0]) as offer:
        assert offer.pay(PIN).receipt.amount == 450
    assert balance(stack, ola.customer_id) == before - 450
    # online again, the POS refreshes and seals to the new epoch from now on
    second = _cached_kid(stack, config)
    assert is_epoch_kid(second) and second != first
    assert decode_text(_seal_here(stack, config, stack.workdir / "new.png"))[2] == second
    # another epoch: a terminal still offline on its cached key makes codes that still pay
    rotate_and_restart(stack, 0, epoch=True)
    with _offline(config) as offline:
        older = _seal_here(stack, offline, stack.workdir / "older.png")
    assert decode_text(older)[2] == second
    with Wallet.load(ola.wallet_dir) as wallet, wallet.open(older) as offer:
        assert offer.pay(PIN).receipt.amount == 450
    # the code sealed to the first epoch's key, two epochs ago, still pays too
    with Wallet.load(ola.wallet_dir) as wallet, wallet.open(codes[1]) as offer:
        assert offer.pay(PIN).receipt.amount == 450
    assert balance(stack, ola.customer_id) == before - 1350
    # back online, the terminal learns of the third epoch and seals to it
    third = _cached_kid(stack, config)
    assert is_epoch_kid(third) and third not in (first, second)
