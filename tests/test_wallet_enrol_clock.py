"""Enrolment judges the key carrier's certificate at trusted time (threat-model K15b).

Every payment judges the carrier certificate at ``Wallet.trusted_now`` (the latest of the
device clock and the marks of trusted time, ``code.timefloor``), but ``wallet enroll`` judged
it at ``time.time()``: with the device clock set back into an expired certificate's window,
the wallet enrolled the carrier with it. Now enrolment asks the institution for its current
revocation list first and judges at the latest of the device clock, the list's signed
``issued_at`` and the marks a ``trusted-time`` file in the wallet directory holds; a clock more
than ``CLOCK_TOLERANCE`` behind a signed time is ``device_clock_behind`` before the carrier is
touched (the token unused). In process: the card is an in-memory card, the institution a stub
that certifies the carrier's key with the validity a test gives it. "Set back": the device
clock is the real one and the true time (what the institution signs) later than it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Lifecycle, MemoryStorage
from safescan.carrier.testing import LocalInstitution
from safescan.carrier.transport.loopback import LoopbackTransport
from safescan.client.errors import InstitutionUnreachable
from safescan.code import (
    ProvisioningBundle,
    RevocationList,
    Role,
    carrier_subject,
    issue_certificate,
    seal_bundle,
)
from safescan.code.attestation import AttestationStatement
from safescan.code.errors import SafescanError
from safescan.code.timefloor import TimeFloor
from safescan.wallet import enroll as enrol_module
from safescan.wallet.errors import DeviceClockBehind

HOUR, DAY, YEAR = 3600, 86400, 365 * 86400
SERIAL = 1000


@dataclass
class _Institution:
    """``WalletClient`` as ``enroll`` uses it: keys, revocations, carriers."""

    inst: LocalInstitution
    crl: bytes | None  # the current revocation list (None: it has none to give)
    valid: tuple[int, int]  # the carrier certificate's not_before, not_after
    spent: bool = False  # the token was spent (the carrier registered)

    def __post_init__(self) -> None:
        self.keys = self.revocations = self.carriers = self

    def root_keys(self) -> object:
        return self.inst.trust

    def signed(self, scope: str = "all") -> bytes:
        if self.crl is None:
            raise InstitutionUnreachable("no list (test)", maybe_delivered=False)
        return self.crl

    def enroll(self, token: str, keys: object) -> SimpleNamespace:
        self.spent = True
        inst = self.inst
        statement = AttestationStatement.from_bytes(keys.attestation)  # type: ignore[attr-defined]
        cert = issue_certificate(
            inst.key,
            inst.kid,
            serial=SERIAL,
            role=Role.CARRIER,
            subject=carrier_subject(SERIAL),
            public_key=statement.signing_public,
            not_before=self.valid[0],
            not_after=self.valid[1],
        )
        bundle = ProvisioningBundle(
            carrier_serial=SERIAL,
            certificate=cert,
            institution_keys={inst.kid: inst.key.public_key},
            scheme_keys=(inst.scheme,),
            issued_at=self.valid[0],
            transport_public=statement.transport_public,
        )
        return SimpleNamespace(
            certificate=cert.to_bytes(),
            bundle=seal_bundle(bundle, inst.key, inst.kid),
            carrier_serial=SERIAL,
            customer_id="C-erin",
            key_update=None,
        )

    def close(self) -> None:
        pass


@dataclass
class _Phone:
    inst: LocalInstitution
    card: Card
    directory: Path
    real: int

    def enrol(self, institution: _Institution, monkeypatch: pytest.MonkeyPatch) -> object:
        client = CarrierClient(LoopbackTransport(self.card))
        client.power_on()
        monkeypatch.setattr(enrol_module, "WalletClient", lambda url: institution)
        monkeypatch.setattr(
            enrol_module, "CarrierClient", SimpleNamespace(connect=lambda u: client)
        )
        return enrol_module.enroll(
            directory=self.directory,
            institution_url="https://127.0.0.1:1",
            carrier_url="tcp://127.0.0.1:9",
            token="enr_clocktest",
            pin="246810",
        )

    def lifecycle(self) -> object:
        client = CarrierClient(LoopbackTransport(self.card))
        client.power_on()
        client.select()
        return client.get_info().lifecycle

    def crl(self, issued_at: int, *, next_update: int | None = None) -> bytes:
        return RevocationList.issue(
            self.inst.key,
            self.inst.kid,
            sequence=1,
            issued_at=issued_at,
            serials=frozenset(),
            next_update=next_update,
        ).to_bytes()


@pytest.fixture
def phone(tmp_path: Path) -> _Phone:
    real = int(time.time())
    inst = LocalInstitution.create(now=real - HOUR)
    card = Card(MemoryStorage())  # the device's (real) clock
    card.power_on()
    factory = CarrierClient(LoopbackTransport(card))
    factory.power_on()
    inst.manufacture(factory)
    factory.power_off()
    return _Phone(inst, card, tmp_path / "wallet", real)


def _keep(phone: _Phone, floor: TimeFloor) -> None:
    """The wallet directory already holds marks of trusted time (the phone held a wallet here,
    or a failed enrolment verified the institution's list)."""
    phone.directory.mkdir(parents=True)
    (phone.directory / "trusted-time").write_bytes(floor.to_bytes())


@pytest.mark.parametrize("known", ["institution_list", "kept_signed_mark"])
def test_an_expired_carrier_certificate_is_refused_with_the_clock_set_back(
    phone: _Phone, monkeypatch: pytest.MonkeyPatch, known: str
) -> None:
    """Attack: the true time is a day later than the device clock (set back a day); the
    certificate the enrolment answer carries expired an hour after the device's time (a
    replayed answer, an institution whose clock is wrong). The institution signed the true
    time in its current revocation list, or a ``trusted-time`` file in the wallet directory
    keeps it. Before: judged by ``time.time()``, the carrier was enrolled with it. Now:
    ``device_clock_behind``, before the carrier is touched and the token spent."""
    true_now = phone.real + DAY
    crl = phone.crl(true_now) if known == "institution_list" else None
    if known == "kept_signed_mark":
        _keep(phone, TimeFloor(signed=true_now, device=true_now))
    institution = _Institution(phone.inst, crl, (phone.real - YEAR, phone.real + HOUR))
    with pytest.raises(DeviceClockBehind) as refused:
        phone.enrol(institution, monkeypatch)
    assert "the token is still unused" in refused.value.message
    assert not institution.spent
    assert phone.lifecycle() is Lifecycle.BLANK
    assert not (phone.directory / "wallet.json").exists()


def test_an_expired_carrier_certificate_is_refused_at_a_device_time_already_seen(
    phone: _Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: no signed time at hand (the institution gives no list), but the device clock
    already read a day later (kept in ``trusted-time``) and was set back. Before: the expired
    certificate was taken and the carrier personalised with it. Now: ``certificate_expired``
    and the carrier stays blank."""
    _keep(phone, TimeFloor(signed=0, device=phone.real + DAY))
    institution = _Institution(phone.inst, None, (phone.real - YEAR, phone.real + HOUR))
    with pytest.raises(SafescanError) as refused:
        phone.enrol(institution, monkeypatch)
    assert refused.value.code == "certificate_expired"
    assert phone.lifecycle() is Lifecycle.BLANK
    assert not (phone.directory / "wallet.json").exists()


def test_a_clock_once_ahead_does_not_refuse_a_current_certificate(
    phone: _Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way: the device clock once read ten years ahead (kept as the device mark),
    then was set right. The institution's current list (newer than any signed time seen,
    current by the device clock) shows the mark was wrong: it is put back, the current
    certificate is taken, and the signed time is kept for the first payment."""
    _keep(phone, TimeFloor(signed=0, device=phone.real + 10 * YEAR))
    crl = phone.crl(phone.real - 60, next_update=phone.real + DAY)
    institution = _Institution(phone.inst, crl, (phone.real - HOUR, phone.real + 5 * YEAR))
    config = phone.enrol(institution, monkeypatch)
    assert config.carrier_serial == SERIAL  # type: ignore[attr-defined]
    assert phone.lifecycle() is Lifecycle.PERSONALIZED
    kept = TimeFloor.from_bytes((phone.directory / "trusted-time").read_bytes())
    assert kept.signed == phone.real - 60 and kept.device < phone.real + DAY
