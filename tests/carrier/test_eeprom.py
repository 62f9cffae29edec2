"""EEPROM image: encrypted + authenticated, atomic writes, corrupt image => self-destruct."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safescan.carrier.device import Card
from safescan.carrier.eeprom import Eeprom, FileStorage, Image, Lifecycle
from safescan.carrier.errors import ImageError
from safescan.carrier.testing import LocalInstitution

from .conftest import Clock, personalised_state


@pytest.fixture
def personalised_file(tmp_path: Path, institution: LocalInstitution, clock: Clock) -> Path:
    return personalised_state(tmp_path / "card.state", institution, clock, 5)


def power_on(state: Path, clock: Clock) -> Card:
    card = Card(FileStorage(state), clock=clock)
    card.power_on()
    return card


def test_first_power_on_manufactures(tmp_path: Path, clock: Clock) -> None:
    state = tmp_path / "s"
    card = power_on(state, clock)
    assert card.lifecycle is Lifecycle.BLANK
    assert state.exists() and (tmp_path / "s.devkey").exists()
    assert (state.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "s.devkey").stat().st_mode & 0o777 == 0o600
    again = power_on(state, clock)
    assert again.image is not None and card.image is not None
    assert again.image.device_id == card.image.device_id


def test_image_is_encrypted(personalised_file: Path, clock: Clock) -> None:
    card = power_on(personalised_file, clock)
    assert card.image is not None and card.image.signing_seed is not None
    raw = personalised_file.read_bytes()
    assert bytes(card.image.signing_seed) not in raw
    assert bytes(card.image.scheme_keys[0][1]) not in raw
    assert b"carrier:" not in raw and raw.startswith(b"SSEE\x01")


def test_writes_are_atomic_renames(personalised_file: Path, clock: Clock) -> None:
    card = power_on(personalised_file, clock)
    inode = personalised_file.stat().st_ino
    assert card.image is not None
    card.eeprom.write(card.image)
    assert personalised_file.stat().st_ino != inode  # replaced, never rewritten in place
    assert not personalised_file.with_name(personalised_file.name + ".tmp").exists()


def test_generation_grows(personalised_file: Path, clock: Clock) -> None:
    card = power_on(personalised_file, clock)
    assert card.image is not None
    before = card.image.generation
    card.eeprom.write(card.image)
    assert power_on(personalised_file, clock).image.generation == before + 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b[:10],
        lambda b: b"",
        lambda b: b[:40] + bytes([b[40] ^ 0x01]) + b[41:],  # one bit flipped
        lambda b: b"XXEE" + b[4:],  # wrong magic
        lambda b: b + b"\x00",  # trailing byte
    ],
)
def test_corrupt_image_self_destructs(
    personalised_file: Path, clock: Clock, damage: object
) -> None:
    personalised_file.write_bytes(damage(personalised_file.read_bytes()))  # type: ignore[operator]
    card = power_on(personalised_file, clock)
    assert card.lifecycle is Lifecycle.DESTROYED
    assert card.transmit(bytes.fromhex("00A4040C0A") + b"\xf0SAFESCAN\x01")[-2:] == b"\x69\x83"
    assert card.transmit(bytes.fromhex("80CA0000"))[-2:] == b"\x69\x83"
    # and the destroyed state itself is persisted authentically
    again = power_on(personalised_file, clock)
    assert again.lifecycle is Lifecycle.DESTROYED


def test_image_from_another_device_is_refused(
    personalised_file: Path, tmp_path: Path, clock: Clock
) -> None:
    other = tmp_path / "other.state"
    power_on(other, clock)
    other.write_bytes(personalised_file.read_bytes())  # right format, wrong device key
    assert power_on(other, clock).lifecycle is Lifecycle.DESTROYED


def test_missing_image_with_device_key_self_destructs(
    personalised_file: Path, clock: Clock
) -> None:
    personalised_file.unlink()
    assert power_on(personalised_file, clock).lifecycle is Lifecycle.DESTROYED


def test_missing_device_key_self_destructs(personalised_file: Path, clock: Clock) -> None:
    os.unlink(personalised_file.with_name(personalised_file.name + ".devkey"))
    assert power_on(personalised_file, clock).lifecycle is Lifecycle.DESTROYED


def test_stray_tmp_file_is_ignored(personalised_file: Path, clock: Clock) -> None:
    personalised_file.with_name(personalised_file.name + ".tmp").write_bytes(b"half a write")
    assert power_on(personalised_file, clock).lifecycle is Lifecycle.PERSONALIZED


def test_image_round_trip_and_strict_fields() -> None:
    image = Image.manufacture()
    assert Image.from_cbor(image.to_cbor()) == image
    import cbor2

    doc = cbor2.loads(image.to_cbor())
    doc[13] = 99  # retries above the limit
    with pytest.raises(ImageError):
        Image.from_cbor(cbor2.dumps(doc))
    del doc[13]
    with pytest.raises(ImageError):
        Image.from_cbor(cbor2.dumps(doc))
    with pytest.raises(ImageError):
        Image.from_cbor(b"\xff\x00")


def test_firmware_1_0_images_load_and_revocation_fields_are_strict() -> None:
    """Images written before UPDATE REVOCATIONS (fields 1-17) still load, with no list; the
    new field round-trips and is parsed as strictly as the others."""
    import cbor2

    image = Image.manufacture()
    image.crl_sequence, image.revoked_serials = 7, [1001, 1005]
    assert Image.from_cbor(image.to_cbor()) == image
    doc = cbor2.loads(image.to_cbor())
    for field in (18, 19, 20, 21, 22, 23):  # a firmware 1.0 image
        del doc[field]
    old = Image.from_cbor(cbor2.dumps(doc))
    assert old.crl_sequence == 0 and old.revoked_serials == []
    for bad in ([7], [7, [-1]], [7, "x"], ["7", []], 7):
        doc[18] = bad  # a firmware 1.1 image with a malformed list
        with pytest.raises(ImageError):
            Image.from_cbor(cbor2.dumps(doc))
    doc[18] = [0, []]
    assert Image.from_cbor(cbor2.dumps(doc)).key_epoch == 0  # 1.1 loads
    doc[19] = None  # 1.1 + one 2.0 field: not a known field set
    with pytest.raises(ImageError):
        Image.from_cbor(cbor2.dumps(doc))
    doc[24] = 0  # an unknown field
    with pytest.raises(ImageError):
        Image.from_cbor(cbor2.dumps(doc))


def test_firmware_2_0_fields_round_trip_and_are_strict() -> None:
    import cbor2

    image = Image.manufacture(model=2)
    image.attestation_certificate = b"\x89" + bytes(40)
    image.key_epoch = 12
    image.epoch_keys = [(11, bytearray(b"\x01" * 32), 5000), (12, bytearray(b"\x02" * 32), 6000)]
    assert Image.from_cbor(image.to_cbor()) == image
    doc = cbor2.loads(image.to_cbor())
    for field, bad in (
        (19, 5),
        (20, 3),  # no such model
        (20, -1),
        (21, "1"),
        (22, [[1, b"\x01" * 31, 0]]),
        (22, [[1, b"\x01" * 32]]),
        (22, [[-1, b"\x01" * 32, 0]]),
        (23, -1),  # the time mark (2.1)
        (23, 2**63),
        (23, "1"),
        (23, None),
    ):
        broken = dict(doc)
        broken[field] = bad
        with pytest.raises(ImageError):
            Image.from_cbor(cbor2.dumps(broken))


def test_zeroise_overwrites_in_place() -> None:
    image = Image.manufacture()
    seed = image.attestation_seed
    assert seed is not None and any(seed)
    epoch_key = bytearray(b"\x07" * 32)
    image.epoch_keys = [(3, epoch_key, 0)]
    image.zeroise(1)
    assert seed == bytearray(32) and image.attestation_seed is None
    assert epoch_key == bytearray(32) and image.epoch_keys == []
    assert image.lifecycle is Lifecycle.DESTROYED


def test_self_destruct_wipes_old_bytes(personalised_file: Path, clock: Clock) -> None:
    card = power_on(personalised_file, clock)
    wiped: list[bytes] = []
    storage = card.eeprom.storage
    assert isinstance(storage, FileStorage)
    real_write = storage.write_image

    def record(data: bytes) -> None:
        wiped.append(personalised_file.read_bytes())
        real_write(data)

    storage.write_image = record  # type: ignore[method-assign]
    card.tamper()
    assert card.lifecycle is Lifecycle.DESTROYED
    assert wiped and set(wiped[-1]) == {0}  # old image zero-filled before the new one lands
    assert Eeprom(FileStorage(personalised_file)).load().lifecycle is Lifecycle.DESTROYED
