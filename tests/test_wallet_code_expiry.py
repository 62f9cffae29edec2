"""A wallet whose clock is set back, shown an expired payment code or a code signed under an
expired merchant certificate (threat-model K15b).

The key carrier checks a code's expiry and its certificate's validity by its own clock, and the
wallet re-checked the certificate by the device clock: a device whose clock is set back (a
shop's Wi-Fi answering NTP, malware, someone holding the phone) sets back both, so an old code
(a replay of a photographed one) and a merchant certificate past ``not_after`` were accepted and
the customer asked to pay. Now the wallet judges both at trusted time (``Wallet.trusted_now``:
the latest of the device clock, the newest institution-signed time verified and the newest
device time seen, ``code.timefloor``), before anything is asked. In process: the card is an
in-memory card on the same (set-back) clock, the institution a stub that is offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import MemoryStorage
from safescan.carrier.provision import personalize
from safescan.carrier.testing import DEFAULT_MERCHANT, LocalInstitution
from safescan.carrier.transport.loopback import LoopbackTransport
from safescan.client.errors import InstitutionUnreachable
from safescan.code.certs import RevocationList, Role, issue_certificate
from safescan.code.envelope import Issuer
from safescan.code.keys import SigningKey
from safescan.wallet.errors import CodeRefusedByWallet
from safescan.wallet.flow import Wallet
from safescan.wallet.store import WalletConfig

HOUR, DAY = 3600, 86400


@dataclass
class Device:
    """One phone: the wallet and its key carrier read the same clock."""

    now: int

    def __call__(self) -> int:
        return self.now


class _Offline:
    """The institution, unreachable (or answering ``crl`` for the revocation list)."""

    def __init__(self) -> None:
        self.crl: bytes | None = None

    def signed(self, scope: str = "all") -> bytes:
        if self.crl is None:
            raise InstitutionUnreachable("offline (test)", maybe_delivered=False)
        return self.crl

    def status(self, text: str) -> None:
        raise InstitutionUnreachable("offline (test)", maybe_delivered=False)


@dataclass
class Phone:
    inst: LocalInstitution
    device: Device
    card: Card
    config: WalletConfig
    institution: _Offline

    def wallet(self) -> Wallet:
        """A wallet process on this phone (nothing held in memory), its carrier in process."""
        w = Wallet(self.config, clock=self.device)
        w.api.revocations = self.institution  # type: ignore[assignment]
        w.api.codes = self.institution  # type: ignore[assignment]
        client = CarrierClient(LoopbackTransport(self.card))
        client.power_on()

        def connect(trust: object) -> CarrierClient:
            client.open_session(self.inst.trust, now=self.device.now)
            return client

        w.connect_carrier = connect  # type: ignore[method-assign,assignment]
        return w


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Phone]:
    inst = LocalInstitution.create()
    device = Device(inst.now)
    card = Card(MemoryStorage(), clock=device)
    card.power_on()
    factory = CarrierClient(LoopbackTransport(card))
    factory.power_on()
    inst.manufacture(factory)
    factory.power_off()
    client = CarrierClient(LoopbackTransport(card))
    client.power_on()
    personalize(client, inst.make_bundle, "246810", 5)
    config = WalletConfig(
        institution_url="https://127.0.0.1:1",
        carrier_url="tcp://127.0.0.1:9",
        trust=inst.trust,
        carrier_serial=1000,
        directory=tmp_path,
    )
    config.save()
    institution = _Offline()
    # online once at the start: the institution's current list (issued now, a day's validity)
    institution.crl = RevocationList.issue(
        inst.key,
        inst.kid,
        sequence=1,
        issued_at=inst.now,
        serials=frozenset(),
        next_update=inst.now + DAY,
    ).to_bytes()
    yield Phone(inst, device, card, config, institution)


def _seen(phone: Phone, t: int) -> None:
    """The wallet ran at device time ``t`` (a revocation check: a status, a scan, a payment)."""
    phone.device.now = t
    w = phone.wallet()
    try:
        w.trust()
    finally:
        w.close()


def _open(phone: Phone, text: str) -> None:
    w = phone.wallet()
    try:
        offer = w.open(text)
        offer.close()
    finally:
        w.close()


def test_an_expired_code_replayed_with_the_clock_set_back_is_refused(phone: Phone) -> None:
    """Attack: a code issued at T + 1 h, valid 10 minutes (photographed at the till); at
    T + 2 h the wallet ran (offline since T); then the phone's clock is set back to
    T + 1 h 5 min, when the code was still valid, and the code is shown to the wallet.
    Before: the carrier (same clock) opened it, the wallet asked the customer to pay it.
    Now: ``code_expired`` before anything is asked, saying the clock went back. At the right
    time the same kind of code is still offered."""
    t0 = phone.inst.now
    _seen(phone, t0 + 60)  # online: the list, issued at t0
    phone.institution.crl = None  # offline from now on
    code = phone.inst.dynamic_code(issued_at=t0 + HOUR, lifetime=600)
    assert isinstance(code, str)
    phone.device.now = t0 + HOUR + 60
    _open(phone, code)  # while it is valid: offered
    _seen(phone, t0 + 2 * HOUR)
    phone.device.now = t0 + HOUR + 300  # set back: the code looks valid to the clock
    with pytest.raises(CodeRefusedByWallet) as refused:
        _open(phone, code)
    assert refused.value.reason == "code_expired"
    assert "a clock set back does not make a code valid again" in refused.value.message


def test_a_certificate_expired_with_the_clock_set_back_is_refused(phone: Phone) -> None:
    """Attack: a merchant's code-signing certificate valid until T + 90 min signs a code valid
    for a day (the carrier takes it: the code's own expiry is not reached); at T + 3 h the
    wallet ran; the clock is set back to T + 1 h, when the certificate was valid. Before: the
    wallet's certificate check by the device clock passed and the customer was asked. Now:
    ``certificate_expired`` judged at trusted time."""
    t0 = phone.inst.now
    _seen(phone, t0 + 60)
    phone.institution.crl = None
    key = SigningKey.generate()
    cert = issue_certificate(
        phone.inst.key,
        phone.inst.kid,
        serial=7001,
        role=Role.MERCHANT,
        subject=DEFAULT_MERCHANT.id,
        public_key=key.public_key,
        not_before=t0 - HOUR,
        not_after=t0 + 90 * 60,
        merchant=DEFAULT_MERCHANT,
    )
    code = phone.inst.dynamic_code(
        issued_at=t0 + HOUR - 60, lifetime=DAY, issuer=Issuer.merchant(key, cert)
    )
    assert isinstance(code, str)
    phone.device.now = t0 + HOUR
    _open(phone, code)  # the certificate valid: offered
    _seen(phone, t0 + 3 * HOUR)
    phone.device.now = t0 + HOUR  # set back
    with pytest.raises(CodeRefusedByWallet) as refused:
        _open(phone, code)
    assert refused.value.reason == "certificate_expired"
    assert "a clock set back does not make a certificate valid again" in refused.value.message
