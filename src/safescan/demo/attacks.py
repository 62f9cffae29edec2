"""The demo's attacks on a running deployment, each returning ``(refused, reason)``: a forged
sticker, an altered amount, a replayed code and authorization, a PIN brute force. Reused by the
end-to-end tests."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from safescan.api.wire import PaymentRequest
from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CarrierBlocked, CarrierError, RestartRequired, WrongPin
from safescan.client.wallet import WalletClient
from safescan.code import (
    DynamicCode,
    Issuer,
    Merchant,
    SafescanError,
    SchemePublicKey,
    SigningKey,
    decode_text,
    encode_text,
    seal,
)
from safescan.merchant.client import Order
from safescan.wallet.errors import CodeRefusedByWallet
from safescan.wallet.flow import Wallet


@dataclass
class Attack:
    """One attack and how it ended."""

    name: str
    title: str
    refused: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "name": self.name,
            "title": self.title,
            "refused": self.refused,
            "reason": self.reason,
        }


def scheme_public_key(base_url: str) -> SchemePublicKey:
    """The institution's current scheme key (public: anyone can seal a code to it)."""
    with WalletClient(base_url) as api:
        kid, public = api.keys.current_scheme_key()
    return SchemePublicKey(kid, public)


def forged_code(base_url: str, like: Order, merchant: Merchant, kid: int) -> str:
    """A well-formed code for the same merchant and goods, signed by a fraudster's key."""
    now = int(time.time())
    code = DynamicCode(
        merchant=merchant,
        order_id="o-" + secrets.token_hex(5),
        items=like.items,
        total=like.total,
        currency=like.currency,
        issued_at=now,
        expires_at=now + 300,
        nonce=secrets.token_bytes(8),
    )
    fraud = Issuer.institution(SigningKey.generate(), kid)
    return encode_text(seal(code, fraud, scheme_public_key(base_url)))


def altered_code(text: str, offset: int = 70) -> str:
    """The same code with one byte of the sealed part changed (e.g. where the amount sits)."""
    raw = bytearray(decode_text(text))
    raw[min(offset, len(raw) - 20)] ^= 0x01
    return encode_text(bytes(raw))


def refused_by_wallet(wallet: Wallet, text: str) -> tuple[bool, str]:
    """Does the wallet refuse this code before asking anything?"""
    try:
        offer = wallet.open(text)
    except CodeRefusedByWallet as exc:
        return True, f"{exc.reason}: {exc.message}"
    except SafescanError as exc:
        return True, f"{exc.code}: {exc.message}"
    offer.close()
    return False, "the wallet offered to pay it"


def institution_refuses_resubmission(wallet: Wallet, text: str, pin: str) -> tuple[bool, str]:
    """Bypass the wallet's checks: have the carrier sign the paid code again and submit it."""
    trust, _ = wallet.trust()
    carrier = wallet.connect_carrier(trust)
    try:
        contents = carrier.open_code(text)
        carrier.verify_pin(pin)
        assert contents.total is not None and contents.currency is not None
        auth = carrier.authorize(
            merchant_id=contents.merchant.id, amount=contents.total, currency=contents.currency
        )
    finally:
        carrier.close()
    try:
        with WalletClient(wallet.config.institution_url) as api:
            api.payments.create(PaymentRequest(text, auth.to_bytes()))
    except SafescanError as exc:
        return True, f"{exc.code}: {exc.message}"
    return False, "the institution accepted a second payment"


def replay_authorization(base_url: str, text: str, authorization: bytes) -> tuple[bool, str]:
    """Send a captured authorization again (new request, no idempotency key)."""
    try:
        with WalletClient(base_url) as api:
            api.payments.create(PaymentRequest(text, authorization))
    except SafescanError as exc:
        return True, f"{exc.code}: {exc.message}"
    return False, "the institution accepted the replayed authorization"


def brute_force_pin(
    carrier_url: str, trust: Any, *, real_pin: str, say: Callable[[str], None]
) -> tuple[bool, str]:
    """Guess PINs until the carrier destroys itself (power-cycling when it asks to)."""
    guesses = [f"{n:04d}" for n in range(100) if f"{n:04d}" != real_pin]
    tries = 0
    with CarrierClient.connect(carrier_url) as carrier:
        carrier.open_session(trust)
        while guesses:
            guess = guesses[0]
            try:
                carrier.verify_pin(guess)
            except WrongPin as exc:
                tries += 1
                guesses.pop(0)
                left = exc.retries_left
                say(f"guess {guess}: wrong PIN, {left} {'try' if left == 1 else 'tries'} left")
                continue
            except RestartRequired:
                say("the carrier wants to be unplugged first: power cycle, go on guessing")
                carrier.power_cycle()
                carrier.open_session(trust)
                continue
            except CarrierBlocked as exc:
                tries += 1
                say(f"guess {guess}: {exc.message}")
                break
            return False, f"the PIN {guess} was accepted"
    try:
        with CarrierClient.connect(carrier_url) as carrier:
            carrier.open_session(trust)
    except CarrierBlocked as exc:
        return True, f"carrier destroyed after {tries} wrong PINs: {exc.message}"
    except CarrierError as exc:
        return True, f"carrier destroyed after {tries} wrong PINs: {exc.message}"
    return False, "the carrier still works after the brute force"
