"""The card's key material in use: the scheme keyring and trust store, UPDATE REVOCATIONS,
KEY UPDATE (scheme-key epochs, :mod:`safescan.code.keyupdate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Reason, StatusWord
from safescan.carrier.firmware.common import MAX_COUNTER, refuse
from safescan.carrier.messages import KeysUpdated, RevocationsTaken
from safescan.code.errors import SafescanError

if TYPE_CHECKING:
    from safescan.carrier.device import Card
    from safescan.code.certs import TrustStore
    from safescan.code.keys import SchemeKeyring


def scheme(card: Card) -> tuple[SchemeKeyring, TrustStore]:
    """The keyring and trust store, built once per power cycle (or after they change)."""
    if "keyring" not in card.keys.extra:
        from safescan.code.certs import TrustStore
        from safescan.code.keys import SchemeKey, SchemeKeyring, VerifyKey

        image = card.image
        assert image is not None
        ring = SchemeKeyring()
        for kid, raw, retire in image.scheme_keys:  # static-code keys, from the bundle
            ring.add(SchemeKey.from_seed(kid, bytes(raw), retire or None))
        from safescan.code.keyupdate import epoch_kid

        for epoch, raw, retire in image.epoch_keys:  # dynamic-code keys, from KEY UPDATEs
            ring.add(SchemeKey.from_seed(epoch_kid(epoch), bytes(raw), retire))
        card.keys.extra["keyring"] = ring
        trust = TrustStore({kid: VerifyKey(raw) for kid, raw in image.institution_keys})
        trust.revoked_serials = frozenset(image.revoked_serials)
        trust.revoked_subjects = frozenset(image.revoked_subjects)
        trust.crl_sequence = image.crl_sequence
        card.keys.extra["trust"] = trust
    return card.keys.extra["keyring"], card.keys.extra["trust"]


def update_revocations(card: Card, command: CommandApdu) -> bytes:
    """Take a newer institution-signed revocation list: merchant certificates on it are
    refused by OPEN CODE from now on (offline, whatever the host does)."""
    from safescan.code.certs import RevocationList

    image = card.image
    assert image is not None
    _, trust = scheme(card)
    try:
        crl = RevocationList.from_bytes(command.data, trust)
    except SafescanError as exc:  # malformed, unknown issuer key, signature
        raise refuse(
            StatusWord.WRONG_DATA, Reason.BAD_DATA, f"revocation list: {exc.message}"
        ) from None
    if crl.sequence >= MAX_COUNTER or any(n >= MAX_COUNTER for n in crl.serials):
        # the EEPROM image holds 63-bit numbers: never take what it could not store
        raise refuse(
            StatusWord.WRONG_DATA, Reason.BAD_DATA, "revocation list: a number is too large"
        )
    if crl.sequence <= image.crl_sequence:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.REVOCATIONS_NOT_NEWER,
            f"revocation list {crl.sequence} is not newer than {image.crl_sequence}",
        )
    if crl.entries > rom.MAX_REVOKED_SERIALS:
        # a genuine list the card cannot keep: never carry on as if unchecked. The card
        # remembers it is behind and refuses merchant-signed codes until a list fits.
        image.crl_stale = crl.sequence
        card.eeprom.write(image)
        raise refuse(
            StatusWord.NOT_ENOUGH_MEMORY,
            Reason.OVERSIZE_INPUT,
            f"the card keeps at most {rom.MAX_REVOKED_SERIALS} revocation entries; it"
            " refuses merchant-signed codes until it gets a list it can keep",
        )
    card.advance_time_mark(crl.issued_at)  # institution-signed, verified above
    image.crl_sequence = crl.sequence
    image.revoked_serials = sorted(crl.serials)
    image.revoked_subjects = sorted(crl.subjects)
    image.crl_stale = 0
    card.eeprom.write(image)
    trust.revoked_serials = frozenset(crl.serials)
    trust.revoked_subjects = frozenset(crl.subjects)
    trust.crl_sequence = crl.sequence
    return RevocationsTaken(sequence=crl.sequence, entries=crl.entries).to_cbor()


def key_update(card: Card, command: CommandApdu) -> bytes:
    """KEY UPDATE: take the scheme keys of the epochs after the one the card holds.

    The update must be sealed to this card's transport key, signed by its institution, made
    for its serial and start exactly at its epoch (so a replayed, reordered or stale update is
    refused: ``6985`` KEY_UPDATE_OUT_OF_ORDER). Retired epoch keys are dropped (at the card's
    trusted time, :meth:`Card.trusted_now`, which the update's own signed ``issued_at`` has
    just advanced), a key id reused by a newer epoch replaces the old key, and at most
    MAX_LIVE_EPOCHS keys are kept (the oldest go first); dropped keys are overwritten.
    Answers CBOR ``{1: the card's epoch now, 2: [epochs held]}``.
    """
    from safescan.code.keyupdate import MAX_LIVE_EPOCHS, epoch_kid, open_key_update

    image = card.image
    assert image is not None and card.keys.transport is not None
    assert image.carrier_serial is not None
    _, trust = scheme(card)
    try:
        update = open_key_update(
            command.data, card.keys.transport, trust, carrier_serial=image.carrier_serial
        )
    except SafescanError as exc:
        raise refuse(
            StatusWord.WRONG_DATA, Reason.BAD_KEY_UPDATE, f"key update: {exc.message}"
        ) from None
    if update.from_epoch != image.key_epoch:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.KEY_UPDATE_OUT_OF_ORDER,
            f"the key update starts at epoch {update.from_epoch}; this carrier holds"
            f" epoch {image.key_epoch}",
        )
    if update.to_epoch >= MAX_COUNTER:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_KEY_UPDATE, "key update: epoch too large")
    card.advance_time_mark(update.issued_at)  # institution-signed, verified above
    now = card.trusted_now()  # retirement by trusted time, not the card's clock alone
    new_kids = {epoch_kid(k.epoch) for k in update.keys}
    kept: list[tuple[int, bytearray, int]] = []
    dropped: list[bytearray] = []
    for epoch, raw, retire in image.epoch_keys:
        if retire <= now or epoch_kid(epoch) in new_kids:
            dropped.append(raw)
        else:
            kept.append((epoch, raw, retire))
    kept += [(k.epoch, bytearray(k.key.private_bytes()), k.retire_at) for k in update.keys]
    kept.sort(key=lambda entry: entry[0])
    while len(kept) > MAX_LIVE_EPOCHS:
        dropped.append(kept.pop(0)[1])
    image.epoch_keys = kept
    image.key_epoch = update.to_epoch
    card.eeprom.write(image)
    for raw in dropped:  # the image without them is durable: overwrite the old bytes
        raw[:] = bytes(len(raw))
    card.keys.extra.clear()  # rebuild the keyring with the new epochs
    return KeysUpdated(epoch=image.key_epoch, epochs=tuple(e for e, _, _ in kept)).to_cbor()
