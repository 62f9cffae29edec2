"""The carrier's time mark: a clock set back never revives an expired code, a lapsed merchant
certificate or a retired scheme key (threat model K23).

The card keeps in its EEPROM image the newest institution-signed time it has verified (the
provisioning bundle's, a KEY UPDATE's, a revocation list's, an institution-signed code's
``issued_at``) and judges at the later of its clock and that mark (docs/protocol.md §6).
Attacks: the clock set back then an expired code, an expired merchant certificate, a retired
scheme key; replays of an older bundle, key update or list (the mark never goes back); a mark
from a forged or merchant-signed object (never taken). Kept: power cycles, an image of firmware
2.0 (migrated), a write cut mid-way; self-destruct clears it; writes are throttled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cbor2
import pytest

from safescan.carrier import rom
from safescan.carrier.apdu import Reason
from safescan.carrier.client import CarrierClient, GeneratedKeys
from safescan.carrier.device import Card
from safescan.carrier.eeprom import FileStorage, Lifecycle, MemoryStorage
from safescan.carrier.errors import (
    CardStatusError,
    CodeRefused,
    ConditionsNotSatisfied,
    WrongData,
)
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution
from safescan.code import SigningKey
from safescan.code.certs import RevocationList
from safescan.code.keys import SchemeKey

from .conftest import PIN, Clock, connect

FIXTURES = Path(__file__).parent / "fixtures"


def refused_as(client: CarrierClient, code: str | bytes) -> str:
    with pytest.raises(CodeRefused) as exc:
        client.open_code(code)
    return str(exc.value.error_code)


def mark_of(card: Card) -> int:
    assert card.image is not None
    return card.image.time_mark


def serial_of(client: CarrierClient) -> int:
    serial = client.get_info().carrier_serial
    assert serial is not None
    return serial


# --- the clock set back -----------------------------------------------------------------------


def test_a_clock_set_back_does_not_revive_an_expired_code(
    card: Card, carrier: CarrierClient, institution: LocalInstitution, clock: Clock
) -> None:
    t = institution.now  # the bundle was signed at t: the card's mark
    expired = institution.dynamic_code(issued_at=t - 700, lifetime=600)  # expired at t - 100
    assert refused_as(carrier, expired) == "code_expired"
    clock.now = t - 650  # the host's clock set back: by it, the code is current
    assert refused_as(carrier, expired) == "code_expired"
    carrier.power_cycle()  # the mark is in the EEPROM, not RAM
    carrier.open_session(institution.trust)
    assert mark_of(card) == t
    assert refused_as(carrier, expired) == "code_expired"
    # a current code still opens at the set-back clock (nothing else changed)
    assert carrier.open_code(institution.dynamic_code(order_id="fresh")).total == 335


def test_a_clock_set_back_does_not_revive_an_expired_merchant_certificate(
    carrier: CarrierClient, institution: LocalInstitution, clock: Clock
) -> None:
    t = institution.now
    institution.now = t - 400 * 86400  # a merchant certified long ago: lapsed at t - 35 days
    issuer = institution.merchant_issuer()
    institution.now = t
    code = institution.dynamic_code(issuer=issuer, issued_at=t - 36 * 86400, lifetime=3600)
    clock.now = t - 36 * 86400  # set back to a day the certificate and the code were current
    assert refused_as(carrier, code) == "certificate_expired"


def test_a_clock_set_back_does_not_revive_a_retired_scheme_key(
    card: Card, carrier: CarrierClient, institution: LocalInstitution, clock: Clock
) -> None:
    t = institution.now
    short = institution.rotate(retire_in=1000)  # retires at t + 1000
    serial = serial_of(carrier)
    assert carrier.key_update(institution.key_update(serial, 0)) == short.epoch
    code = institution.dynamic_code(order_id="short", scheme=short.key.public, lifetime=5000)
    assert carrier.open_code(code).scheme_kid == short.key.kid
    institution.now = t + 2000  # the next epoch's KEY UPDATE, signed after the retirement
    institution.rotate()
    carrier.key_update(institution.key_update(serial, short.epoch))
    assert clock.now == t  # the card's clock never moved (or was set back)
    assert refused_as(carrier, code) in {"key_retired", "unknown_key_id"}
    assert mark_of(card) == t + 2000
    assert card.image is not None
    assert short.epoch not in [e for e, _, _ in card.image.epoch_keys]  # dropped, overwritten


def test_the_carrier_process_judges_at_its_mark_when_its_host_clock_is_set_back(
    tmp_path: Path, institution: LocalInstitution
) -> None:
    """The real process, its host's clock set back 25 minutes (libfaketime) after a restart:
    a code that expired 20 minutes ago is current by that clock, and refused."""
    if shutil.which("faketime") is None:
        pytest.skip("libfaketime's faketime is not installed")
    state = tmp_path / "carrier.state"
    proc = CarrierProcess(state)
    proc.start()
    try:
        with CarrierClient.connect(proc.url) as client:
            institution.manufacture(client)
            personalize(client, institution.make_bundle, PIN, 5)  # signed at institution.now
    finally:
        proc.stop()
    back = CarrierProcess(
        state,
        prefix=["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", "-1500"],
    )
    back.start()  # a power cycle, the host's clock now 25 minutes behind
    try:
        t = institution.now
        expired = institution.dynamic_code(issued_at=t - 1800, lifetime=600)  # until t - 1200
        with CarrierClient.connect(back.url) as client:
            client.open_session(institution.trust)
            assert refused_as(client, expired) == "code_expired"
            assert client.open_code(institution.dynamic_code(order_id="now")).total == 335
    finally:
        back.stop()


# --- the mark never goes back, and moves only for what the institution signed ------------------


def test_replays_of_older_signed_objects_never_move_the_mark_back(
    storage: MemoryStorage, clock: Clock, card: Card, institution: LocalInstitution
) -> None:
    t = institution.now
    bundles: list[bytes] = []

    def keep_bundle(keys: GeneratedKeys) -> bytes:
        bundles.append(institution.make_bundle(keys))
        return bundles[-1]

    carrier = connect(card)
    personalize(carrier, keep_bundle, PIN, 5)
    carrier.open_session(institution.trust)
    serial = serial_of(carrier)
    institution.rotate()
    old_update = institution.key_update(serial, 0)
    old_list = institution.revocation_list(set(), sequence=1)
    assert carrier.key_update(old_update) == 1
    assert carrier.update_revocations(old_list) == 1
    institution.now = t + 5000
    institution.rotate()
    carrier.key_update(institution.key_update(serial, 1))
    carrier.update_revocations(institution.revocation_list(set(), sequence=2))
    with pytest.raises(ConditionsNotSatisfied) as exc:
        carrier.key_update(old_update)
    assert exc.value.reason == Reason.KEY_UPDATE_OUT_OF_ORDER
    with pytest.raises(ConditionsNotSatisfied) as exc:
        carrier.update_revocations(old_list)
    assert exc.value.reason == Reason.REVOCATIONS_NOT_NEWER
    with pytest.raises(ConditionsNotSatisfied) as exc:
        carrier.personalize(bundles[0], PIN, 5)
    assert exc.value.reason == Reason.ALREADY_PERSONALIZED
    carrier.power_cycle()
    carrier.open_session(institution.trust)
    clock.now = t  # set back to when the old objects were signed
    institution.now = t
    assert refused_as(carrier, institution.dynamic_code(lifetime=600)) == "code_expired"
    assert mark_of(card) == t + 5000


def test_a_forged_or_merchant_signed_time_never_moves_the_mark(
    storage: MemoryStorage, card: Card, carrier: CarrierClient, institution: LocalInstitution
) -> None:
    t = institution.now
    far = t + 10 * 365 * 86400
    serial = serial_of(carrier)
    rogue = LocalInstitution(
        SigningKey.generate(),
        institution.kid,
        institution.scheme,
        far,
        carriers={**institution.carriers},
    )
    rogue.rotate()
    forged_list = rogue.revocation_list(set(), sequence=5)
    with pytest.raises(WrongData):
        carrier.update_revocations(forged_list)
    with pytest.raises(WrongData):
        carrier.key_update(rogue.key_update(serial, 0))
    # a genuine list with its signed issue time altered
    institution.now = far
    genuine = institution.revocation_list(set(), sequence=6)
    institution.now = t
    value = cbor2.loads(genuine)
    value[2] = far + 1
    with pytest.raises(WrongData):
        carrier.update_revocations(cbor2.dumps(value))
    assert RevocationList.from_bytes(genuine, institution.trust).issued_at == far
    # an unsigned code: a key the card does not trust, sealed to its own scheme key
    forged_code = rogue.dynamic_code(issued_at=far, lifetime=600)
    assert refused_as(carrier, forged_code) in {"signature_invalid", "code_not_yet_valid"}
    # a merchant-signed code: its issue time is the merchant's clock, never a mark
    merchant = institution.merchant_issuer()
    assert (
        carrier.open_code(
            institution.dynamic_code(issuer=merchant, issued_at=t + 50, order_id="m")
        ).total
        == 335
    )
    assert mark_of(card) == t
    assert carrier.open_code(institution.dynamic_code(lifetime=600)).total == 335


# --- EEPROM: throttled writes, power cycles, self-destruct, migration, cut writes ---------------


def test_codes_move_the_mark_with_throttled_writes(
    storage: MemoryStorage,
    clock: Clock,
    card: Card,
    carrier: CarrierClient,
    institution: LocalInstitution,
) -> None:
    t = institution.now
    writes = storage.writes
    for step in (60, 120, rom.TIME_MARK_STEP):  # institution-signed codes, each later
        institution.now = clock.now = t + step
        carrier.open_code(institution.dynamic_code(order_id=f"o{step}"))
        assert mark_of(card) == t + step
    assert storage.writes == writes  # within the step: RAM only
    institution.now = clock.now = t + rom.TIME_MARK_STEP + 1
    carrier.open_code(institution.dynamic_code(order_id="past-the-step"))
    assert storage.writes == writes + 1
    institution.now = clock.now = t + rom.TIME_MARK_STEP + 60
    carrier.open_code(institution.dynamic_code(order_id="after"))
    carrier.power_cycle()  # the last 59 s of mark were in RAM only: at most the step is lost
    carrier.open_session(institution.trust)
    assert mark_of(card) == t + rom.TIME_MARK_STEP + 1


def test_self_destruct_clears_the_mark(
    storage: MemoryStorage, card: Card, carrier: CarrierClient, institution: LocalInstitution
) -> None:
    assert mark_of(card) == institution.now
    assert card.tamper()
    assert mark_of(card) == 0
    card.power_off()
    card.power_on()
    assert card.lifecycle is Lifecycle.DESTROYED and mark_of(card) == 0


def _fixture_institution() -> tuple[LocalInstitution, dict[str, object]]:
    doc = json.loads((FIXTURES / "firmware-2.0.json").read_text())
    inst = LocalInstitution(
        SigningKey.from_seed(bytes.fromhex(doc["institution_seed"])),
        1,
        SchemeKey.from_seed(7, bytes.fromhex(doc["scheme_seed"])),
        int(doc["now"]),
    )
    return inst, doc


def test_a_firmware_2_0_image_loads_and_gains_its_mark(tmp_path: Path) -> None:
    """An image written by firmware 2.0 (tests/carrier/fixtures/make_firmware_2_0_image.py,
    run on the code before the mark): it loads with every field and no mark, then takes one."""
    state = tmp_path / "carrier.state"
    for suffix, name in (("", "firmware-2.0.state"), (".devkey", "firmware-2.0.devkey")):
        target = Path(str(state) + suffix)
        shutil.copyfile(FIXTURES / name, target)
        os.chmod(target, 0o600)
    inst, doc = _fixture_institution()
    now = int(str(doc["now"]))
    clock = Clock(now)
    card = Card(FileStorage(state), clock=clock)
    card.power_on()
    image = card.image
    assert image is not None and image.lifecycle is Lifecycle.PERSONALIZED
    assert image.carrier_serial == doc["serial"] and image.key_epoch == 1
    assert image.time_mark == 0 and card.trusted_now() == now
    client = connect(card)
    client.open_session(inst.trust, now=now)
    clock.now = inst.now = now + 3600
    assert client.open_code(inst.dynamic_code()).total == 335  # institution-signed: a mark
    client.power_cycle()
    assert mark_of(card) == now + 3600
    assert card.eeprom.storage.read_image() is not None
    raw = card.eeprom.decode(card.eeprom.storage.read_image() or b"")
    assert raw.time_mark == now + 3600 and raw.key_epoch == 1
    clock.now = now  # set back: the code of an hour ago, expired since, is refused
    client.open_session(inst.trust, now=now)
    inst.now = now
    assert refused_as(client, inst.dynamic_code(lifetime=600)) == "code_expired"


def test_a_write_cut_mid_way_leaves_the_last_durable_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, institution: LocalInstitution
) -> None:
    """Power cut while the image with a new mark is written (its temporary file written, never
    renamed; then a torn temporary file): the next power-on reads the previous image, whole."""
    clock = Clock(institution.now)
    state = tmp_path / "carrier.state"
    card = Card(FileStorage(state), clock=clock)
    card.power_on()
    factory = connect(card)
    institution.manufacture(factory)
    factory.power_off()
    carrier = connect(card)
    personalize(carrier, institution.make_bundle, PIN, 5)
    carrier.open_session(institution.trust)
    t = institution.now
    institution.now = t + 1000
    institution.rotate()

    class PowerCut(Exception):
        pass

    def cut(src: object, dst: object) -> None:
        raise PowerCut

    monkeypatch.setattr(os, "replace", cut)
    with pytest.raises(CardStatusError):  # the command dies with the power (6F00)
        carrier.key_update(institution.key_update(serial_of(carrier), 0))
    monkeypatch.undo()
    Path(str(state) + ".tmp").write_bytes(state.read_bytes()[:40])  # a torn temporary file
    again = Card(FileStorage(state), clock=clock)
    again.power_on()
    assert again.lifecycle is Lifecycle.PERSONALIZED and again.image is not None
    assert again.image.time_mark == t and again.image.key_epoch == 0
