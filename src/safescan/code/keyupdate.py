"""Scheme-key epochs and KEY UPDATE: how code keys rotate without stranding key carriers.

The scheme code keys that dynamic codes are sealed to rotate in **epochs** (numbered 1, 2, ...,
daily by default and on demand). Epoch ``e`` uses the key id :func:`epoch_kid` ``(e)`` =
``0x80 | (e mod 128)`` in the code header's one byte; ids 0x00-0x7F stay for the long-lived
static-code keys. An id comes round again only after 128 epochs, long after the key that held
it retired (the institution refuses a schedule whose live keys could exceed
:data:`MAX_LIVE_EPOCHS`), and a reused id names a *different* key: a carrier still holding
the old one just fails to decrypt.

Each non-revoked carrier gets the new epochs' private keys in a KEY UPDATE, made by the
institution for that one carrier and sealed to its own transport key::

    binary    = HPKE-seal(carrier transport key, info = "safescan key update v1", plaintext)
    plaintext = signature(64) || signed
    signed    = CBOR [issuer_kid, [carrier_serial, from_epoch, to_epoch, issued_at,
                                   [+ [epoch, x25519_private(32), retire_at]]]]
    signature = Ed25519(institution key issuer_kid, "SS1-KUPD" || signed)

The carrier takes it only if ``from_epoch`` is exactly the epoch it holds and ``to_epoch`` is
newer (so a replayed, reordered or stale update is refused), every key's epoch is in
``(from_epoch, to_epoch]`` in increasing order and the newest is ``to_epoch``. A carrier that
was offline for several epochs catches up with one update from its own epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from safescan.code import cbor
from safescan.code.certs import TrustStore
from safescan.code.errors import DecryptionFailed, MalformedKeyUpdate, OversizeInput
from safescan.code.keys import SchemeKey, Signer

KEY_UPDATE_CONTEXT = b"SS1-KUPD"
KEY_UPDATE_INFO = b"safescan key update v1"
EPOCH_KID_BASE = 0x80
EPOCH_KIDS = 0x80
#: Epoch keys a carrier keeps (and so at most live at once: an update carries no more).
MAX_LIVE_EPOCHS = 16
MAX_EPOCH = 2**32 - 1
MAX_KEY_UPDATE_BYTES = 2048
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def epoch_kid(epoch: int) -> int:
    """The code-header key id of epoch ``epoch`` (0x80-0xFF)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= MAX_EPOCH:
        raise MalformedKeyUpdate(f"an epoch is an integer from 1 to {MAX_EPOCH}")
    return EPOCH_KID_BASE | (epoch % EPOCH_KIDS)


def is_epoch_kid(kid: int) -> bool:
    """Whether a scheme key id belongs to the epoch range (else a static-code key)."""
    return kid >= EPOCH_KID_BASE


@dataclass(frozen=True)
class EpochKey:
    """One epoch's scheme key (private) and when it retires."""

    epoch: int
    key: SchemeKey  # kid == epoch_kid(epoch), retire_at set

    @property
    def retire_at(self) -> int:
        """When codes sealed to this epoch stop opening (unix seconds)."""
        assert self.key.retire_at is not None
        return self.key.retire_at


@dataclass(frozen=True)
class KeyUpdate:
    """The epochs ``(from_epoch, to_epoch]`` a carrier lacks, for that carrier only."""

    carrier_serial: int
    from_epoch: int
    to_epoch: int
    issued_at: int
    keys: tuple[EpochKey, ...]

    def check(self) -> None:
        """The update's own consistency (raises :class:`MalformedKeyUpdate`)."""
        if not 0 <= self.from_epoch < self.to_epoch <= MAX_EPOCH:
            raise MalformedKeyUpdate("a key update goes from an epoch to a newer one")
        if not self.keys or len(self.keys) > MAX_LIVE_EPOCHS:
            raise MalformedKeyUpdate(f"a key update carries 1-{MAX_LIVE_EPOCHS} epoch keys")
        epochs = [k.epoch for k in self.keys]
        if epochs != sorted(set(epochs)) or epochs[-1] != self.to_epoch:
            raise MalformedKeyUpdate("the key update's epochs must increase up to its last epoch")
        if epochs[0] <= self.from_epoch:
            raise MalformedKeyUpdate("the key update carries an epoch the carrier already has")
        for k in self.keys:
            if k.key.kid != epoch_kid(k.epoch) or not k.key.retire_at:
                raise MalformedKeyUpdate("an epoch key has the wrong key id or no retirement time")


def seal_key_update(
    update: KeyUpdate, issuer: Signer, issuer_kid: int, transport_public: bytes
) -> bytes:
    """Sign the update with the institution key and seal it to the carrier's transport key."""
    update.check()
    signed = cbor.dumps(
        [
            issuer_kid,
            [
                update.carrier_serial,
                update.from_epoch,
                update.to_epoch,
                update.issued_at,
                [[k.epoch, k.key.private_bytes(), k.retire_at] for k in update.keys],
            ],
        ]
    )
    plaintext = issuer.sign(KEY_UPDATE_CONTEXT + signed) + signed
    recipient = X25519PublicKey.from_public_bytes(transport_public)
    return _SUITE.encrypt(plaintext, recipient, info=KEY_UPDATE_INFO)


def open_key_update(
    data: bytes, transport_key: X25519PrivateKey, trust: TrustStore, *, carrier_serial: int
) -> KeyUpdate:
    """Open and verify a key update inside the carrier (the epoch sequence is the caller's
    check). Raises typed errors: sealed to another carrier (``DecryptionFailed``), not signed
    by a trusted institution key (``SignatureInvalid``/``UnknownKeyId``), malformed, or made
    for another serial (``MalformedKeyUpdate``)."""
    if not isinstance(data, bytes) or len(data) > MAX_KEY_UPDATE_BYTES:
        raise OversizeInput("the key update is too large")
    try:
        plaintext = _SUITE.decrypt(data, transport_key, info=KEY_UPDATE_INFO)
    except (InvalidTag, ValueError):
        raise DecryptionFailed("the key update is altered or sealed to another carrier") from None
    signature, signed = plaintext[:64], plaintext[64:]
    value = cbor.strict_loads(signed, max_depth=4, error=MalformedKeyUpdate)
    try:
        issuer_kid, (serial, from_epoch, to_epoch, issued_at, keys) = value
    except (TypeError, ValueError):
        raise MalformedKeyUpdate("the key update has the wrong shape") from None
    trust.institution_key(issuer_kid).verify(
        signature, KEY_UPDATE_CONTEXT + signed, what="key update signature"
    )
    for name, number in (
        ("serial", serial),
        ("from_epoch", from_epoch),
        ("to_epoch", to_epoch),
        ("issued_at", issued_at),
    ):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise MalformedKeyUpdate(f"the key update's {name} must be an unsigned integer")
    if serial != carrier_serial:
        raise MalformedKeyUpdate("the key update was made for another carrier")
    if not isinstance(keys, list):
        raise MalformedKeyUpdate("the key update's keys must be a list")
    parsed = []
    for entry in keys:
        if not isinstance(entry, list) or len(entry) != 3:
            raise MalformedKeyUpdate("an epoch key is [epoch, private key, retire_at]")
        epoch, raw, retire_at = entry
        if isinstance(retire_at, bool) or not isinstance(retire_at, int) or retire_at <= 0:
            raise MalformedKeyUpdate("an epoch key's retirement time must be a positive integer")
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise MalformedKeyUpdate("an epoch key is 32 bytes")
        parsed.append(EpochKey(epoch, SchemeKey.from_seed(epoch_kid(epoch), raw, retire_at)))
    update = KeyUpdate(serial, from_epoch, to_epoch, issued_at, tuple(parsed))
    update.check()
    return update
