"""Keys: Ed25519 signing keys, X25519 scheme code keys with ids and rotation, encrypted storage.

Private keys are only ever written encrypted under a passphrase: PKCS#8 sealed with scrypt and
AES-256-GCM (:mod:`.keyfile`), both the library's. Nothing here hand-rolls crypto.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from safescan.code import keyfile, strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.errors import (
    KeyFileError,
    KeyRetired,
    SafescanError,
    SignatureInvalid,
    UnknownKeyId,
)
from safescan.code.numbers import canonical_int
from safescan.code.pubkeys import check_ed25519_public, check_x25519_public
from safescan.code.rekeying import recover_if_interrupted
from safescan.code.smallfile import read_bounded

#: the most a key file is read for (a sealed PKCS#8 key is under 1 KiB; review: it was read
#: whole, so a key path naming /dev/zero or a huge file ran the process out of memory)
KEY_FILE_LIMIT = 64 * 1024

SCHEME_KID_MAX = 0xFF  # scheme key ids fit the code header's one byte


def _check_kid(kid: int) -> int:
    if isinstance(kid, bool) or not isinstance(kid, int) or not 0 <= kid <= SCHEME_KID_MAX:
        raise KeyFileError(f"scheme key id must be an integer from 0 to {SCHEME_KID_MAX}")
    return kid


def write_private_file(path: Path, data: bytes) -> None:
    """Write a (already encrypted) private key file with owner-only permissions, atomically:
    a temporary file (0600 even if a stale one was left with other modes) written whole and
    fsync'd, renamed over ``path``, the directory fsync'd (the rename survives a crash)."""
    write_atomic(Path(path), data)


def _read(path: Path) -> bytes:
    # a rekey interrupted in this directory puts every file back first (code/rekeying.py)
    recover_if_interrupted(Path(path).parent)
    try:
        return read_bounded(Path(path), KEY_FILE_LIMIT, "a key file")
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes
    # the decoded key, made on the first verification and kept (decoding the point costs
    # about 5 us, as much again on every verification with a long-lived key)
    _decoded: Ed25519PublicKey | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise KeyFileError("an Ed25519 public key is 32 bytes")
        check_ed25519_public(self.raw)  # small order, non-canonical, off the curve: refused

    def verify(self, signature: bytes, message: bytes, *, what: str = "signature") -> None:
        """Verify ``signature`` over ``message``; raise :class:`SignatureInvalid` if it fails."""
        if not isinstance(signature, bytes) or len(signature) != 64:
            raise SignatureInvalid(f"{what} is not a 64-byte Ed25519 signature")
        try:
            key = self._decoded
            if key is None:
                key = Ed25519PublicKey.from_public_bytes(self.raw)
                object.__setattr__(self, "_decoded", key)
            key.verify(signature, message)
        except InvalidSignature:
            raise SignatureInvalid(f"{what} does not verify: forged or altered data") from None
        except ValueError:
            raise SignatureInvalid(f"{what}: the public key is not a valid Ed25519 key") from None

    def hex(self) -> str:
        """The key as hex, for display."""
        return self.raw.hex()


def parse_pinned_keys(values: Sequence[str]) -> dict[int, VerifyKey]:
    """``KID:HEX`` strings -> {kid: institution root key}. The form ``safescan institution
    root-keys`` prints and ``--institution-key`` options (carrier factory anchor, wallet
    enrollment) take; raises :class:`KeyFileError` on a malformed one.
    A key id is written in its one spelling (``1``, never ``01``: both named key 1 and the
    last one given won) and named once; the key is 64 hex digits (``bytes.fromhex`` also
    skipped spaces inside)."""
    keys: dict[int, VerifyKey] = {}
    for value in values:
        kid, sep, hex_ = value.strip().partition(":")
        try:
            n = canonical_int(kid, field="an institution key id")
            raw = bytes.fromhex(hex_) if sep and len(hex_) == 64 and hex_.isalnum() else b""
        except (ValueError, SafescanError):
            n, raw = -1, b""
        if n < 0 or len(raw) != 32:
            raise KeyFileError(
                f"an institution key is KID:64-hex-digits (e.g. 1:3b6a...), not {value!r}"
            )
        if n in keys:
            raise KeyFileError(f"the institution key {n} is given twice")
        keys[n] = VerifyKey(raw)
    return keys


@runtime_checkable
class Signer(Protocol):
    """Anything that makes Ed25519 signatures: a :class:`SigningKey` in memory, or a key that
    never leaves a PKCS#11 token (``safescan.institution.hsm.TokenKey``). Everything that signs
    on the institution's behalf (certificates, codes, receipts, lists, webhooks, events,
    checkpoints) takes a ``Signer``."""

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        ...

    @property
    def public_key(self) -> VerifyKey:
        """The matching public key."""
        ...


class SigningKey:
    """An Ed25519 private key."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """A key from a 32-byte seed (for test vectors and key derivation)."""
        if len(seed) != 32:
            raise KeyFileError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``; returns the 64-byte signature."""
        return self._key.sign(message)

    @property
    def public_key(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(
            self._key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def to_pem(self, passphrase: bytes) -> bytes:
        """The sealed key file (:mod:`.keyfile`)."""
        return keyfile.seal(self._key, passphrase)

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes) -> SigningKey:
        """Load a sealed key file (or a legacy encrypted PKCS#8 PEM)."""
        key = keyfile.unseal(data, passphrase)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError("the key file does not hold an Ed25519 signing key")
        return cls(key)

    def save(self, path: Path, passphrase: bytes) -> None:
        """Write the key encrypted under ``passphrase`` (mode 0600)."""
        write_private_file(Path(path), self.to_pem(passphrase))

    @classmethod
    def load(cls, path: Path, passphrase: bytes) -> SigningKey:
        """Read a key written by :meth:`save`."""
        return cls.from_pem(_read(path), passphrase)

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_key.hex()[:16]}...)"


@dataclass(frozen=True, slots=True)
class SchemePublicKey:
    """The public half of a scheme code key: what codes are sealed to."""

    kid: int
    raw: bytes

    def __post_init__(self) -> None:
        check_x25519_public(self.raw, what=f"scheme public key {self.kid}")

    def x25519(self) -> X25519PublicKey:
        """The key as a ``cryptography`` object."""
        return X25519PublicKey.from_public_bytes(self.raw)


class SchemeKey:
    """A scheme code key (X25519) with a key id and an optional retirement time.

    Codes are sealed to the newest active key; a key keeps opening codes until ``retire_at``
    (unix seconds), after which it is refused with :class:`KeyRetired`.
    """

    __slots__ = ("_key", "kid", "retire_at")

    def __init__(self, kid: int, key: X25519PrivateKey, retire_at: int | None = None) -> None:
        self.kid = _check_kid(kid)
        self._key = key
        self.retire_at = retire_at

    @classmethod
    def generate(cls, kid: int, retire_at: int | None = None) -> SchemeKey:
        """A fresh random scheme key."""
        return cls(kid, X25519PrivateKey.generate(), retire_at)

    @classmethod
    def from_seed(cls, kid: int, seed: bytes, retire_at: int | None = None) -> SchemeKey:
        """A key from 32 raw private bytes (for test vectors)."""
        if len(seed) != 32:
            raise KeyFileError("an X25519 private key is 32 bytes")
        return cls(kid, X25519PrivateKey.from_private_bytes(seed), retire_at)

    @property
    def public(self) -> SchemePublicKey:
        """The public half, with the key id."""
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return SchemePublicKey(self.kid, raw)

    def private_key(self) -> X25519PrivateKey:
        """The private key object (for HPKE open inside this package and the carrier)."""
        return self._key

    def private_bytes(self) -> bytes:
        """Raw private bytes, only for loading the key into a key carrier at personalisation."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def is_retired(self, now: int) -> bool:
        """Whether the key no longer opens codes at ``now``."""
        return self.retire_at is not None and now >= self.retire_at

    def to_json(self, passphrase: bytes) -> str:
        """A JSON document: key id, retirement time and the encrypted PEM."""
        return json.dumps(
            {
                "type": "safescan-scheme-key",
                "kid": self.kid,
                "retire_at": self.retire_at,
                "pem": keyfile.seal(self._key, passphrase).decode("ascii"),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes, passphrase: bytes) -> SchemeKey:
        """Load a key written by :meth:`to_json`."""
        try:
            # the strict rule: a "kid" or "pem" named twice is refused, never the last one taken
            doc = strictjson.loads(text if isinstance(text, bytes) else text.encode())
            if not isinstance(doc, dict) or doc.get("type") != "safescan-scheme-key":
                raise KeyFileError("not a safescan scheme key file")
            kid, retire_at, pem = doc["kid"], doc["retire_at"], doc["pem"].encode("ascii")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise KeyFileError("corrupt scheme key file") from exc
        if retire_at is not None and (
            isinstance(retire_at, bool) or not isinstance(retire_at, int)
        ):
            raise KeyFileError("corrupt scheme key file: bad retirement time")
        key = keyfile.unseal(pem, passphrase)
        if not isinstance(key, X25519PrivateKey):
            raise KeyFileError("the key file does not hold an X25519 scheme key")
        return cls(kid, key, retire_at)

    def save(self, path: Path, passphrase: bytes) -> None:
        """Write the key encrypted under ``passphrase`` (mode 0600)."""
        write_private_file(Path(path), self.to_json(passphrase).encode("ascii"))

    @classmethod
    def load(cls, path: Path, passphrase: bytes) -> SchemeKey:
        """Read a key written by :meth:`save`."""
        return cls.from_json(_read(path), passphrase)

    def __repr__(self) -> str:
        return f"SchemeKey(kid={self.kid}, retire_at={self.retire_at})"


@dataclass
class SchemeKeyring:
    """The scheme code keys a party can open codes with, by key id."""

    keys: dict[int, SchemeKey] = field(default_factory=dict)

    def add(self, key: SchemeKey) -> None:
        """Add (or replace) a key."""
        self.keys[key.kid] = key

    def for_opening(self, kid: int, now: int) -> SchemeKey:
        """The key with id ``kid``, if known and not retired at ``now``."""
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKeyId(f"the code is sealed to scheme key {kid}, which is not known here")
        if key.is_retired(now):
            raise KeyRetired(f"the code is sealed to scheme key {kid}, which has been retired")
        return key

    def current(self, now: int) -> SchemeKey:
        """The newest (highest id) key that is not retired: the one to seal new codes to."""
        active = [k for k in self.keys.values() if not k.is_retired(now)]
        if not active:
            raise UnknownKeyId("no active scheme key")
        return max(active, key=lambda k: k.kid)
