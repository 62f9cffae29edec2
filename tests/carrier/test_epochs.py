"""Scheme-key epochs on the card: KEY UPDATE, replay protection, catch-up, retirement, id wrap.

A carrier gets each epoch's code key only through a KEY UPDATE sealed to its own transport key,
signed by its institution, for its serial, starting exactly at the epoch it holds. Attacks:
replayed, reordered, forged (another signer, altered bytes), another card's update, another
serial; a carrier that receives nothing more (revoked) cannot open a code of the next epoch.
"""

from __future__ import annotations

import pytest

from safescan.carrier.apdu import Reason
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import MemoryStorage
from safescan.carrier.errors import CodeRefused, ConditionsNotSatisfied, WrongData
from safescan.carrier.provision import personalize
from safescan.carrier.testing import LocalInstitution
from safescan.code import SigningKey
from safescan.code.errors import MalformedKeyUpdate
from safescan.code.keyupdate import MAX_LIVE_EPOCHS, KeyUpdate, epoch_kid, seal_key_update

from .conftest import PIN, Clock, connect


def serial_of(client: CarrierClient) -> int:
    serial = client.get_info().carrier_serial
    assert serial is not None
    return serial


def code_of(institution: LocalInstitution, epoch: int, order: str = "o-1") -> str:
    key = next(k for k in institution.epochs if k.epoch == epoch)
    code = institution.dynamic_code(order_id=order, scheme=key.key.public)
    assert isinstance(code, str)
    return code


def opens(client: CarrierClient, code: str | bytes) -> bool:
    try:
        client.open_code(code)
    except CodeRefused:
        return False
    return True


def refused_as(client: CarrierClient, code: str | bytes) -> str:
    with pytest.raises(CodeRefused) as exc:
        client.open_code(code)
    return str(exc.value.error_code)


@pytest.fixture
def institution() -> LocalInstitution:
    """A fresh institution per test (its epochs change), with epochs 1, 2, 3 started; the
    conftest's ``card`` is manufactured and personalised by it."""
    inst = LocalInstitution.create()
    for _ in range(3):
        inst.rotate()
    return inst


def test_new_epoch_opens_only_after_its_key_update(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    serial = serial_of(carrier)
    assert carrier.get_info().key_epoch == 0
    newest = institution.epochs[-1].epoch
    code = code_of(institution, newest)
    assert refused_as(carrier, code) == "unknown_key_id"
    assert carrier.key_update(institution.key_update(serial, 0)) == newest
    assert carrier.open_code(code).scheme_kid == epoch_kid(newest)
    assert carrier.get_info().key_epoch == newest
    # the static-code key from the bundle still opens codes
    assert opens(carrier, institution.dynamic_code(order_id="static-key"))


def test_key_update_in_clear_or_in_the_channel_and_persists(
    card: Card, carrier: CarrierClient, institution: LocalInstitution
) -> None:
    serial = serial_of(carrier)
    carrier.close_session()
    carrier.select()
    assert carrier.key_update(institution.key_update(serial, 0, to_epoch=2)) == 2  # in clear
    carrier.open_session(institution.trust)
    assert carrier.key_update(institution.key_update(serial, 2, to_epoch=3)) == 3  # sealed
    carrier.power_cycle()
    carrier.open_session(institution.trust)
    assert carrier.get_info().key_epoch == 3
    assert opens(carrier, code_of(institution, 2)) and opens(carrier, code_of(institution, 3))
    assert card.image is not None and [e for e, _, _ in card.image.epoch_keys] == [1, 2, 3]


def test_replayed_and_reordered_updates_are_refused(
    card: Card, carrier: CarrierClient, institution: LocalInstitution
) -> None:
    serial = serial_of(carrier)
    first = institution.key_update(serial, 0, to_epoch=1)
    second = institution.key_update(serial, 1, to_epoch=2)
    third = institution.key_update(serial, 2, to_epoch=3)
    for early in (second, third):  # reordered: not from the card's epoch 0
        with pytest.raises(ConditionsNotSatisfied) as exc:
            carrier.key_update(early)
        assert exc.value.reason == Reason.KEY_UPDATE_OUT_OF_ORDER
    assert carrier.key_update(first) == 1
    generation = card.image.generation if card.image else 0
    for replay in (first, first):
        with pytest.raises(ConditionsNotSatisfied) as exc:
            carrier.key_update(replay)
        assert exc.value.reason == Reason.KEY_UPDATE_OUT_OF_ORDER
    with pytest.raises(ConditionsNotSatisfied):
        carrier.key_update(third)  # still out of order
    assert card.image is not None and card.image.generation == generation  # nothing written
    assert carrier.key_update(second) == 2 and carrier.key_update(third) == 3
    with pytest.raises(ConditionsNotSatisfied):
        carrier.key_update(second)  # an older one, after a newer one: refused
    assert carrier.get_info().key_epoch == 3


def test_forged_and_foreign_updates_are_refused(
    card: Card, carrier: CarrierClient, institution: LocalInstitution, clock: Clock
) -> None:
    serial = serial_of(carrier)
    genuine = institution.key_update(serial, 0)
    forged: dict[str, bytes] = {}
    # another institution's key signs an otherwise perfect update for this card
    rogue = LocalInstitution(
        SigningKey.generate(), institution.kid, institution.scheme, institution.now
    )
    rogue.epochs = list(institution.epochs)
    forged["rogue signer"] = rogue.key_update(
        serial, 0, transport_public=institution.carriers[serial]
    )
    # one bit flipped anywhere
    for position in (0, 31, 40, len(genuine) // 2, len(genuine) - 1):
        altered = bytearray(genuine)
        altered[position] ^= 0x01
        forged[f"bit {position}"] = bytes(altered)
    forged["truncated"] = genuine[:-1]
    forged["empty"] = b""
    forged["garbage"] = bytes(300)
    # the genuine institution's update for another serial, sealed to this card's key
    forged["other serial"] = institution.key_update(
        serial + 1, 0, transport_public=institution.carriers[serial]
    )
    # an update made for another card (sealed to its transport key)
    other = connect(Card(MemoryStorage(), clock=clock))
    institution.manufacture(other)
    personalize(other, institution.make_bundle, PIN, 5)
    other_serial = serial_of(other)
    forged["another card's"] = institution.key_update(other_serial, 0)
    for name, data in forged.items():
        with pytest.raises(WrongData) as exc:
            carrier.key_update(data)
        assert exc.value.reason == Reason.BAD_KEY_UPDATE, name
    assert carrier.get_info().key_epoch == 0
    assert other.key_update(forged["another card's"]) == 3  # it was genuine, for the other card
    assert carrier.key_update(genuine) == 3


def test_an_update_that_breaks_its_own_rules_is_refused(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    """Even signed by the institution: kid not the epoch's, epochs out of range, no keys."""
    serial = serial_of(carrier)
    transport = institution.carriers[serial]
    keys = tuple(institution.epochs)
    bad = [
        KeyUpdate(serial, 0, 2, institution.now, keys),  # epoch 3 beyond to_epoch
        KeyUpdate(serial, 1, 3, institution.now, keys),  # epoch 1 not after from_epoch
        KeyUpdate(serial, 0, 3, institution.now, (keys[2], keys[1])),  # not increasing
    ]
    for update in bad:
        with pytest.raises(MalformedKeyUpdate):  # the institution refuses to seal it
            seal_key_update(update, institution.key, institution.kid, transport)
    # bypass the sealing check: the card checks again
    for update in bad:
        object.__setattr__(update, "check", lambda: None)
        data = seal_key_update(update, institution.key, institution.kid, transport)
        with pytest.raises(WrongData) as exc:
            carrier.key_update(data)
        assert exc.value.reason == Reason.BAD_KEY_UPDATE
    assert carrier.get_info().key_epoch == 0


def test_a_carrier_offline_for_several_epochs_catches_up(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    serial = serial_of(carrier)
    while len(institution.epochs) < 2:
        institution.rotate()
    start = institution.epochs[-1].epoch
    carrier.key_update(institution.key_update(serial, 0))
    for _ in range(6):  # six epochs pass while the wallet is offline
        institution.rotate()
    newest = institution.epochs[-1].epoch
    missed = [code_of(institution, e, f"missed-{e}") for e in range(start + 1, newest + 1)]
    assert all(refused_as(carrier, c) == "unknown_key_id" for c in missed)
    # one update from the carrier's own epoch brings every live epoch
    assert carrier.key_update(institution.key_update(serial, start)) == newest
    assert all(opens(carrier, c) for c in missed)
    assert opens(carrier, code_of(institution, start, "old"))  # the older epoch until it retires


def test_a_carrier_that_receives_nothing_more_cannot_open_the_next_epoch(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    """What revocation does to a carrier: the institution stops issuing its updates."""
    serial = serial_of(carrier)
    current = institution.epochs[-1].epoch
    carrier.key_update(institution.key_update(serial, 0))
    before = code_of(institution, current, "before")
    institution.rotate()  # the next epoch (scheduled or on demand): no update for this carrier
    after = code_of(institution, current + 1, "after")
    assert opens(carrier, before)
    assert refused_as(carrier, after) == "unknown_key_id"
    # not even with a replay of every update it ever received
    with pytest.raises(ConditionsNotSatisfied):
        carrier.key_update(institution.key_update(serial, 0))
    assert refused_as(carrier, after) == "unknown_key_id"


def test_old_epochs_open_until_they_retire(
    carrier: CarrierClient, institution: LocalInstitution, clock: Clock
) -> None:
    serial = serial_of(carrier)
    base = institution.epochs[-1].epoch if institution.epochs else 0
    short = institution.rotate(retire_in=1000)
    institution.rotate()
    carrier.key_update(institution.key_update(serial, 0))
    code = institution.dynamic_code(order_id="short", scheme=short.key.public, lifetime=5000)
    assert isinstance(code, str) and short.epoch == base + 1
    assert opens(carrier, code)
    clock.now += 1000  # the card's clock passes the retirement time
    assert refused_as(carrier, code) == "key_retired"


def test_key_ids_wrap_safely_and_the_card_keeps_at_most_16(
    card: Card, carrier: CarrierClient, institution: LocalInstitution
) -> None:
    """Epoch e and e + 128 share a key id: the newer replaces the older on the card, and a
    code sealed to the old key no longer decrypts (it never opens under the wrong epoch)."""
    serial = serial_of(carrier)
    carrier.key_update(institution.key_update(serial, 0, to_epoch=1))
    old = code_of(institution, 1, "epoch-1")
    assert opens(carrier, old)
    while institution.epochs[-1].epoch < 129:
        institution.rotate()
    assert epoch_kid(129) == epoch_kid(1)
    assert carrier.key_update(institution.key_update(serial, 1)) == 129
    assert opens(carrier, code_of(institution, 129, "epoch-129"))
    assert refused_as(carrier, old) == "decryption_failed"  # same id, another key
    assert card.image is not None
    held = [e for e, _, _ in card.image.epoch_keys]
    assert held == list(range(129 - MAX_LIVE_EPOCHS + 1, 130))  # the 16 newest
    assert refused_as(carrier, code_of(institution, 100, "too-old")) == "unknown_key_id"
