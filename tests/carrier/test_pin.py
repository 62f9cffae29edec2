"""PIN: pre-decremented retry counter, 63Cx, per-power-cycle limit, destruction, CHANGE PIN."""

from __future__ import annotations

import pytest

from safescan.carrier import pin as pinmod
from safescan.carrier.apdu import Reason
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Eeprom, Lifecycle, MemoryStorage
from safescan.carrier.errors import (
    CarrierBlocked,
    RestartRequired,
    SecurityStatusNotSatisfied,
    WrongData,
    WrongPin,
)
from safescan.carrier.provision import personalize
from safescan.carrier.testing import LocalInstitution

from .conftest import PIN, Clock, connect


def stored_retries(storage: MemoryStorage) -> int:
    eeprom = Eeprom(storage)
    return eeprom.load().retries_left


def wrong(carrier: CarrierClient) -> WrongPin:
    with pytest.raises(WrongPin) as exc:
        carrier.verify_pin("0000")
    return exc.value


def test_wrong_pin_reports_retries(carrier: CarrierClient, storage: MemoryStorage) -> None:
    assert wrong(carrier).retries_left == 4
    assert wrong(carrier).retries_left == 3
    assert stored_retries(storage) == 3
    assert carrier.get_info().retries_left == 3
    carrier.verify_pin(PIN)  # a correct PIN restores the counter
    assert stored_retries(storage) == 5
    assert carrier.get_info().retries_left == 5


def test_counter_is_decremented_and_persisted_before_comparison(
    carrier: CarrierClient, storage: MemoryStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = pinmod.matches

    def spy(*args: object) -> bool:
        seen.append(stored_retries(storage))
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pinmod, "matches", spy)
    carrier.verify_pin(PIN)
    wrong(carrier)
    assert seen == [4, 4]  # at comparison time the try was already spent on "disk"


class PowerCut(BaseException):
    """Simulates losing power right after a write reached the EEPROM."""


class CuttingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.cut_after_next_write = False

    def write_image(self, data: bytes) -> None:
        super().write_image(data)
        if self.cut_after_next_write:
            self.cut_after_next_write = False
            raise PowerCut


def test_power_cut_mid_check_grants_no_free_try(institution: LocalInstitution) -> None:
    storage = CuttingStorage()
    clock = Clock(institution.now)
    card = Card(storage, clock=clock)
    client = connect(card)
    institution.manufacture(client)
    personalize(client, institution.make_bundle, PIN, 5)
    for expected in (4, 3, 2):
        client.open_session(institution.trust)
        storage.cut_after_next_write = True
        with pytest.raises(PowerCut):
            client.verify_pin("0000")
        card.power_off()
        client.power_on()
        assert client.get_info().retries_left == expected
    client.open_session(institution.trust)
    client.verify_pin(PIN)
    assert client.get_info().retries_left == 5


def test_three_wrong_per_power_cycle_then_restart(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    for left in (4, 3, 2):
        assert wrong(carrier).retries_left == left
    assert carrier.get_info().pin_tries_this_power_cycle == 0
    with pytest.raises(RestartRequired):
        carrier.verify_pin("0000")
    with pytest.raises(RestartRequired):
        carrier.verify_pin(PIN)  # even the right PIN: unplug first
    assert carrier.get_info().retries_left == 2  # refused tries are not spent
    carrier.power_cycle()
    carrier.open_session(institution.trust)
    carrier.verify_pin(PIN)
    assert carrier.get_info().retries_left == 5


def test_correct_pin_resets_power_cycle_count(carrier: CarrierClient) -> None:
    wrong(carrier)
    wrong(carrier)
    carrier.verify_pin(PIN)
    wrong(carrier)
    wrong(carrier)
    assert wrong(carrier).retries_left == 2


def test_wrong_pins_to_destruction(
    carrier: CarrierClient, institution: LocalInstitution, card: Card, storage: MemoryStorage
) -> None:
    assert card.image is not None
    secrets_before = [
        bytes(card.image.signing_seed or b""),
        bytes(card.image.transport_seed or b""),
        bytes(card.image.scheme_keys[0][1]),
    ]
    assert wrong(carrier).retries_left == 4
    assert wrong(carrier).retries_left == 3
    assert wrong(carrier).retries_left == 2
    carrier.power_cycle()
    carrier.open_session(institution.trust)
    assert wrong(carrier).retries_left == 1
    with pytest.raises(CarrierBlocked):
        carrier.verify_pin("1111")
    assert card.lifecycle is Lifecycle.DESTROYED and not carrier.has_session
    with pytest.raises(CarrierBlocked):
        carrier.get_info()
    carrier.power_cycle()
    with pytest.raises(CarrierBlocked):
        carrier.open_session(institution.trust)
    # the image on "disk" holds no key material any more
    assert storage.image is not None
    image = Eeprom(storage).load()
    assert image.lifecycle is Lifecycle.DESTROYED and image.destroyed_reason != 0
    plain = image.to_cbor()
    for secret in secrets_before:
        assert secret not in plain
    assert image.signing_seed is None and image.scheme_keys == []


def test_retry_limit_three(card: Card, institution: LocalInstitution) -> None:
    client = connect(card)
    personalize(client, institution.make_bundle, PIN, 3)
    client.open_session(institution.trust)
    assert wrong(client).retries_left == 2
    assert wrong(client).retries_left == 1
    with pytest.raises(CarrierBlocked):
        client.verify_pin("9999")


def test_torn_last_try_destroys_at_power_on(
    card: Card, institution: LocalInstitution, clock: Clock
) -> None:
    storage = card.eeprom.storage
    client = connect(card)
    personalize(client, institution.make_bundle, PIN, 3)
    assert card.image is not None
    card.image.retries_left = 0  # power was lost after the last try was spent
    card.eeprom.write(card.image)
    again = Card(storage, clock=clock)
    again.power_on()
    assert again.lifecycle is Lifecycle.DESTROYED


def test_pin_status_query_spends_nothing(carrier: CarrierClient, storage: MemoryStorage) -> None:
    assert not carrier.pin_verified()
    assert stored_retries(storage) == 5
    carrier.verify_pin(PIN)
    assert carrier.pin_verified()


@pytest.mark.parametrize("bad", ["123", "12345678901234567", "12a4", "", "١٢٣٤"])
def test_pin_format_is_checked_host_side(carrier: CarrierClient, bad: str) -> None:
    with pytest.raises(WrongData):
        carrier.verify_pin(bad)


def test_malformed_pin_block_spends_no_try(carrier: CarrierClient, storage: MemoryStorage) -> None:
    from safescan.carrier.apdu import Ins

    for block in (
        b"12\xff" + b"\xff" * 13,
        b"1234\xff5" + b"\xff" * 10,
        b"abcd" + b"\xff" * 12,
        b"1234",
    ):
        with pytest.raises(WrongData) as exc:
            carrier._secure(Ins.VERIFY_PIN, block)
        assert exc.value.reason == Reason.BAD_PIN_FORMAT
    assert stored_retries(storage) == 5


def test_change_pin(
    carrier: CarrierClient, institution: LocalInstitution, storage: MemoryStorage
) -> None:
    with pytest.raises(WrongPin):
        carrier.change_pin("0000", "13579")
    assert stored_retries(storage) == 4
    carrier.change_pin(PIN, "13579")
    assert stored_retries(storage) == 5
    carrier.power_cycle()
    carrier.open_session(institution.trust)
    assert wrong(carrier).retries_left == 4
    with pytest.raises(WrongPin):
        carrier.verify_pin(PIN)
    carrier.verify_pin("13579")


def test_change_pin_rejects_bad_new_pin_without_spending(
    carrier: CarrierClient, storage: MemoryStorage
) -> None:
    from safescan.carrier.apdu import Ins

    with pytest.raises(WrongData):
        carrier._secure(Ins.CHANGE_PIN, pinmod.pad_pin(PIN) + b"ab" + b"\xff" * 14)
    assert stored_retries(storage) == 5


def test_pin_needs_secure_channel(carrier: CarrierClient) -> None:
    from safescan.carrier.apdu import CommandApdu, Ins

    resp = carrier.transmit(CommandApdu(0x80, Ins.VERIFY_PIN, data=pinmod.pad_pin(PIN)))
    assert resp.sw == 0x6982
    carrier.close_session()
    with pytest.raises(Exception) as exc:
        carrier.verify_pin(PIN)
    assert not isinstance(exc.value, SecurityStatusNotSatisfied | WrongPin)


def test_verifier_never_stores_pin(carrier: CarrierClient, storage: MemoryStorage) -> None:
    image = Eeprom(storage).load()
    assert PIN.encode() not in image.to_cbor()
    assert image.pin_verifier is not None and len(image.pin_verifier) == 32
