"""The published scheme key list: which scheme code keys a merchant may seal codes to.

The institution signs the public halves of its live scheme code keys, so that a merchant's
terminal can fetch the list once (``GET /v1/keys``), verify it under the institution root keys
it pinned, cache it, and seal codes offline until the keys retire (docs/protocol.md section 9)::

    list = CBOR [ 1, issued_at: uint, current_kid: uint,
                  keys: [+ [kid: uint, x25519_public: bstr(32), retire_at: uint (0 = none)]],
                  issuer_kid: uint, signature: bstr(64) ]
    signature = Ed25519( institution key issuer_kid, "SS1-SKEYS" || CBOR(first five fields) )

Nothing in it is secret; the signature stops a network attacker from making a terminal seal
codes to a key the attacker holds (which would reveal the codes and make them unpayable).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from safescan.code import cbor
from safescan.code.certs import TrustStore
from safescan.code.errors import KeyRetired, MalformedSchemeList, UnknownKeyId
from safescan.code.keys import SchemePublicKey, Signer

LIST_VERSION = 1
LIST_CONTEXT = b"SS1-SKEYS"
MAX_LIST_BYTES = 16384
_U64 = 2**64


def _uint(value: object, name: str, limit: int = _U64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise MalformedSchemeList(f"scheme key list field {name} must be an unsigned integer")
    return value


@dataclass(frozen=True, slots=True)
class PublishedSchemeKey:
    """One live scheme code key, public half, with its retirement time (None: none set)."""

    key: SchemePublicKey
    retire_at: int | None

    def usable_until(self, until: int) -> bool:
        """Whether a code sealed to this key still opens at ``until``."""
        return self.retire_at is None or until < self.retire_at


@dataclass(frozen=True, slots=True)
class SchemeKeyList:
    """An institution-signed list of the scheme public keys codes may be sealed to."""

    issued_at: int
    current_kid: int
    keys: tuple[PublishedSchemeKey, ...]
    issuer_kid: int
    signature: bytes = b""

    def _fields(self) -> list[object]:
        return [
            LIST_VERSION,
            self.issued_at,
            self.current_kid,
            [[k.key.kid, k.key.raw, k.retire_at or 0] for k in self.keys],
            self.issuer_kid,
        ]

    def tbs(self) -> bytes:
        """The bytes the institution signs."""
        return LIST_CONTEXT + cbor.dumps(self._fields())

    def to_bytes(self) -> bytes:
        """Deterministic CBOR."""
        return cbor.dumps([*self._fields(), self.signature])

    @classmethod
    def issue(
        cls,
        issuer: Signer,
        issuer_kid: int,
        *,
        issued_at: int,
        current_kid: int,
        keys: list[PublishedSchemeKey] | tuple[PublishedSchemeKey, ...],
    ) -> SchemeKeyList:
        """Sign a list (keys sorted by id; ``current_kid`` must be one of them)."""
        ordered = tuple(sorted(keys, key=lambda k: k.key.kid))
        unsigned = cls(issued_at, current_kid, ordered, issuer_kid)
        _check(unsigned)
        for k in ordered:
            _check_public(k.key.raw)
        return cls(issued_at, current_kid, ordered, issuer_kid, issuer.sign(unsigned.tbs()))

    @classmethod
    def from_bytes(cls, data: bytes, trust: TrustStore) -> SchemeKeyList:
        """Parse strictly and verify the institution's signature (``SignatureInvalid``)."""
        if not isinstance(data, bytes) or len(data) > MAX_LIST_BYTES:
            raise MalformedSchemeList("the scheme key list is too large")
        value = cbor.strict_loads(data, max_depth=4, error=MalformedSchemeList)
        if not isinstance(value, list) or len(value) != 6 or value[0] != LIST_VERSION:
            raise MalformedSchemeList("not a version-1 scheme key list")
        _, issued_at, current, entries, ikid, sig = value
        if not isinstance(entries, list) or not entries:
            raise MalformedSchemeList("the scheme key list names no key")
        keys = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 3:
                raise MalformedSchemeList("a scheme key list entry is [kid, public key, retire_at]")
            kid, raw, retire = entry
            _check_public(raw)
            retire_ = _uint(retire, "retire_at")
            keys.append(
                PublishedSchemeKey(SchemePublicKey(_uint(kid, "kid", 256), raw), retire_ or None)
            )
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise MalformedSchemeList("the scheme key list signature must be 64 bytes")
        listed = cls(
            _uint(issued_at, "issued_at"),
            _uint(current, "current_kid", 256),
            tuple(keys),
            _uint(ikid, "issuer_kid", 0x10000),
            sig,
        )
        if [k.key.kid for k in listed.keys] != sorted({k.key.kid for k in listed.keys}):
            raise MalformedSchemeList("scheme key list entries must be sorted by unique key id")
        _check(listed)
        trust.institution_key(listed.issuer_kid).verify(
            listed.signature, listed.tbs(), what="scheme key list signature"
        )
        return listed

    def for_sealing(self, now: int, expires_at: int) -> SchemePublicKey:
        """The key to seal a code valid until ``expires_at`` to: the list's current key.

        Raises :class:`KeyRetired` if it retires before the code would expire (the terminal
        must fetch a newer list first): a code is never sealed to a key that cannot open it.
        """
        current = next(k for k in self.keys if k.key.kid == self.current_kid)
        if not current.usable_until(max(now, expires_at)):
            raise KeyRetired(
                f"scheme key {current.key.kid} retires before this code would expire:"
                " fetch the institution's newer scheme key list"
            )
        return current.key


def _check_public(raw: object) -> None:
    """A usable X25519 public key: 32 bytes, not a small-order point (whose shared secret is
    all zeros, which ``cryptography`` refuses to derive)."""
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise MalformedSchemeList("a scheme public key is 32 bytes")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise MalformedSchemeList("a scheme public key is not a usable X25519 key") from None


def _check(listed: SchemeKeyList) -> None:
    if not listed.keys:
        raise MalformedSchemeList("the scheme key list names no key")
    if all(k.key.kid != listed.current_kid for k in listed.keys):
        raise UnknownKeyId(f"the current scheme key {listed.current_kid} is not in the list")
