"""EEPROM: the carrier's one persistent image, encrypted and authenticated, written atomically.

File layout (``STATE``)::

    "SSEE" || format(1)=0x01 || nonce(12) || AES-256-GCM(image_key, nonce, CBOR(image), aad)
    aad = "SSEE" || format

``image_key`` = HKDF-SHA256(device_key, info="safescan eeprom v1"). The 32-byte device key models
the chip's hardware-fused key; the emulation keeps it in ``STATE.devkey`` beside the image
(mode 0600). The image is rewritten whole on every change: write ``STATE.tmp``, fsync, rename
over ``STATE``, fsync the directory. A power cut therefore leaves the old or the new image,
never a mix. Any image that does not decrypt and parse exactly (modified, truncated, missing
while the device key exists, ...) is reported as :class:`ImageError`, and the card's
self-destruct unit then takes over.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from safescan.carrier.errors import ImageError
from safescan.code.atomicfile import write_all, write_atomic
from safescan.code.smallfile import read_bounded

log = logging.getLogger("safescan.carrier")

MAGIC = b"SSEE"
FORMAT = 1
NONCE_BYTES = 12
DEVICE_KEY_BYTES = 32
MAX_IMAGE_BYTES = 64 * 1024
_AAD = MAGIC + bytes([FORMAT])
_U63 = 2**63


class Lifecycle(IntEnum):
    """The card's life: it only ever moves forward."""

    BLANK = 0
    PERSONALIZED = 1
    DESTROYED = 2


def derive_key(device_key: bytes, purpose: bytes) -> bytes:
    """A 32-byte sub-key of the device key for one purpose."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(device_key)


@dataclass
class Image:
    """Everything the card remembers across power cycles.

    Secret fields are ``bytearray`` so the self-destruct unit can overwrite them in place.
    """

    lifecycle: Lifecycle
    device_id: bytes
    attestation_seed: bytearray | None = None
    signing_seed: bytearray | None = None
    transport_seed: bytearray | None = None
    carrier_serial: int | None = None
    certificate: bytes | None = None
    institution_keys: list[tuple[int, bytes]] = field(default_factory=list)
    scheme_keys: list[tuple[int, bytearray, int]] = field(default_factory=list)
    pin_salt: bytes | None = None
    pin_verifier: bytearray | None = None
    retry_limit: int = 0
    retries_left: int = 0
    signature_counter: int = 0
    generation: int = 0
    destroyed_reason: int = 0
    personalized_at: int = 0
    crl_sequence: int = 0  # the newest verified revocation list taken (UPDATE REVOCATIONS)
    revoked_serials: list[int] = field(default_factory=list)
    revoked_subjects: list[str] = field(default_factory=list)  # whole merchants revoked
    crl_stale: int = 0  # sequence of a genuine list too large to keep (0: none): fail closed
    # firmware 2.0
    attestation_certificate: bytes | None = None  # the manufacturer's, for the attestation key
    model: int = 1  # 1 plain, 2 display (safescan.code.attestation.CarrierModel): hardware
    key_epoch: int = 0  # the newest scheme-key epoch taken (KEY UPDATE); 0: none yet
    epoch_keys: list[tuple[int, bytearray, int]] = field(default_factory=list)  # epoch, key, retire
    # firmware 2.1
    #: the newest institution-signed time the card has verified (Unix seconds; 0: none yet):
    #: expiry, validity and retirement are judged at no earlier time, whatever the clock says
    time_mark: int = 0

    @classmethod
    def manufacture(cls, model: int = 1) -> Image:
        """A blank image with a fresh device id and attestation key seed."""
        return cls(
            lifecycle=Lifecycle.BLANK,
            device_id=secrets.token_bytes(8),
            attestation_seed=bytearray(secrets.token_bytes(32)),
            model=model,
        )

    def zeroise(self, reason: int) -> None:
        """Self-destruct: overwrite every secret in place and forget it; lifecycle DESTROYED."""
        secrets_ = [
            self.attestation_seed,
            self.signing_seed,
            self.transport_seed,
            self.pin_verifier,
        ]
        secrets_ += [raw for _, raw, _ in self.scheme_keys]
        secrets_ += [raw for _, raw, _ in self.epoch_keys]
        for buf in secrets_:
            if buf is not None:
                buf[:] = bytes(len(buf))
        self.attestation_seed = self.signing_seed = self.transport_seed = None
        self.pin_verifier = None
        self.pin_salt = None
        self.scheme_keys = []
        self.epoch_keys = []
        self.time_mark = 0
        self.lifecycle = Lifecycle.DESTROYED
        self.destroyed_reason = reason
        self.retries_left = 0

    def to_cbor(self) -> bytes:
        """Deterministic CBOR map with integer keys."""

        def opt(value: bytearray | bytes | None) -> bytes | None:
            return None if value is None else bytes(value)

        doc: dict[int, Any] = {
            1: int(self.lifecycle),
            2: self.device_id,
            3: opt(self.attestation_seed),
            4: opt(self.signing_seed),
            5: opt(self.transport_seed),
            6: self.carrier_serial,
            7: self.certificate,
            8: [[kid, raw] for kid, raw in self.institution_keys],
            9: [[kid, bytes(raw), retire] for kid, raw, retire in self.scheme_keys],
            10: self.pin_salt,
            11: opt(self.pin_verifier),
            12: self.retry_limit,
            13: self.retries_left,
            14: self.signature_counter,
            15: self.generation,
            16: self.destroyed_reason,
            17: self.personalized_at,
            18: [
                self.crl_sequence,
                list(self.revoked_serials),
                list(self.revoked_subjects),
                self.crl_stale,
            ],
            19: self.attestation_certificate,
            20: self.model,
            21: self.key_epoch,
            22: [[epoch, bytes(raw), retire] for epoch, raw, retire in self.epoch_keys],
            23: self.time_mark,
        }
        return cbor2.dumps(doc, canonical=True)

    @classmethod
    def from_cbor(cls, data: bytes) -> Image:
        """Parse an image; raises :class:`ImageError` on any deviation."""
        try:
            doc = cbor2.loads(data)
            # field 18 (revocation list) came with firmware 1.1, 19-22 with 2.0 (attestation
            # certificate, model, scheme-key epoch and epoch keys), 23 with 2.1 (the time
            # mark); older images load without (a 2.0 image: no mark yet, 0)
            if not isinstance(doc, dict) or sorted(doc) not in _FIELD_SETS:
                raise ImageError("the EEPROM image has the wrong fields")
            crl_field = doc.get(18, [0, []])
            if len(crl_field) == 2:  # firmware 1.1: serials only
                crl_field = [*crl_field, [], 0]
            crl_sequence, revoked, subjects, stale = crl_field
            if not all(isinstance(x, str) and 0 < len(x) <= 64 for x in subjects):
                raise ImageError("the EEPROM image's revoked subjects are malformed")
            attestation_cert = doc.get(19)
            model = doc.get(20, 1)
            image = cls(
                lifecycle=Lifecycle(doc[1]),
                device_id=_bytes(doc[2], 8),
                attestation_seed=_secret(doc[3]),
                signing_seed=_secret(doc[4]),
                transport_seed=_secret(doc[5]),
                carrier_serial=None if doc[6] is None else _uint(doc[6]),
                certificate=None if doc[7] is None else _bytes(doc[7]),
                institution_keys=[(_uint(k), _bytes(raw, 32)) for k, raw in doc[8]],
                scheme_keys=[
                    (_uint(k), bytearray(_bytes(raw, 32)), _uint(retire))
                    for k, raw, retire in doc[9]
                ],
                pin_salt=None if doc[10] is None else _bytes(doc[10], 16),
                pin_verifier=None if doc[11] is None else bytearray(_bytes(doc[11], 32)),
                retry_limit=_uint(doc[12]),
                retries_left=_uint(doc[13]),
                signature_counter=_uint(doc[14]),
                generation=_uint(doc[15]),
                destroyed_reason=_uint(doc[16]),
                personalized_at=_uint(doc[17]),
                crl_sequence=_uint(crl_sequence),
                revoked_serials=[_uint(serial) for serial in revoked],
                revoked_subjects=list(subjects),
                crl_stale=_uint(stale),
                attestation_certificate=None
                if attestation_cert is None
                else _bytes(attestation_cert),
                model=_uint(model),
                key_epoch=_uint(doc.get(21, 0)),
                epoch_keys=[
                    (_uint(epoch), bytearray(_bytes(raw, 32)), _uint(retire))
                    for epoch, raw, retire in doc.get(22, [])
                ],
                time_mark=_uint(doc.get(23, 0)),
            )
        except ImageError:
            raise
        except (cbor2.CBORError, ValueError, TypeError, KeyError, RecursionError) as exc:
            raise ImageError(f"the EEPROM image does not parse ({type(exc).__name__})") from None
        if image.model not in (1, 2):
            raise ImageError("the EEPROM image names an unknown carrier model")
        if image.retries_left > image.retry_limit:
            raise ImageError("the EEPROM image's retry counter is out of range")
        if image.lifecycle is Lifecycle.PERSONALIZED and (
            image.signing_seed is None
            or image.transport_seed is None
            or image.certificate is None
            or image.pin_verifier is None
            or image.carrier_serial is None
        ):
            raise ImageError("the EEPROM image is personalised but incomplete")
        return image


#: the field sets of firmware 1.0, 1.1, 2.0 and 2.1 images
_FIELD_SETS = (
    list(range(1, 18)),
    list(range(1, 19)),
    list(range(1, 23)),
    list(range(1, 24)),
)


def _uint(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U63:
        raise ImageError("the EEPROM image holds an out-of-range number")
    return value


def _bytes(value: object, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise ImageError("the EEPROM image holds a malformed byte string")
    return value


def _secret(value: object) -> bytearray | None:
    return None if value is None else bytearray(_bytes(value, 32))


class Storage(Protocol):
    """Where the image and the device key physically live."""

    def read_image(self) -> bytes | None:
        """The stored image bytes, or None if there is none."""

    def write_image(self, data: bytes) -> None:
        """Replace the image atomically and durably."""

    def wipe_image(self) -> None:
        """Overwrite the current image bytes in place (before a destroyed image replaces it)."""

    def read_device_key(self) -> bytes | None:
        """The device key, or None if the chip has none yet."""

    def write_device_key(self, key: bytes) -> None:
        """Fuse a device key (manufacture, or after an unreadable key)."""

    def wipe_device_key(self) -> None:
        """Overwrite the current device key in place (self-destruct, before a new one)."""


class FileStorage:
    """The image in ``path``; the device key in ``path.devkey`` (the emulated fused key).

    Both are the card's own files: read without following a link, from a regular file only,
    at most :data:`MAX_IMAGE_BYTES` (the device key: :data:`DEVICE_KEY_BYTES` + 1), so a FIFO,
    a device, a directory, a link or a huge file at either name is an unreadable image (the
    self-destruct unit takes over), never a hang or a read without end. Overwriting in place
    (the self-destruct unit's wipe) touches only a regular file with no other name, never
    through a link: whatever was planted at ``STATE`` is replaced, never written into.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.key_path = self.path.with_name(self.path.name + ".devkey")

    def _read(self, path: Path, limit: int, what: str) -> bytes | None:
        try:
            return read_bounded(path, limit, what, own=True)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None

    def read_image(self) -> bytes | None:
        """The image file's bytes, or None."""
        return self._read(self.path, MAX_IMAGE_BYTES, "an EEPROM image")

    def write_image(self, data: bytes) -> None:
        """tmp + fsync + rename + directory fsync."""
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise ImageError(f"cannot write the EEPROM image {self.path}: {exc.strerror}") from None

    def wipe_image(self) -> None:
        """Overwrite the old image with zeros in place and sync (see :func:`zero_in_place`)."""
        zero_in_place(self.path)

    def read_device_key(self) -> bytes | None:
        """The fused device key, or None."""
        return self._read(self.key_path, DEVICE_KEY_BYTES, "a device key")

    def write_device_key(self, key: bytes) -> None:
        """Write the device key file (0600), atomically."""
        try:
            write_atomic(self.key_path, key)
        except OSError as exc:
            raise ImageError(
                f"cannot write the device key {self.key_path}: {exc.strerror}"
            ) from None

    def wipe_device_key(self) -> None:
        """Overwrite the device key with zeros in place and sync (self-destruct)."""
        zero_in_place(self.key_path)


def zero_in_place(path: Path) -> None:
    """Zero-fill the card's own file at ``path`` and sync it, before a new file replaces it.

    Only a regular file with exactly one name is overwritten, opened without following a
    link and without waiting (a FIFO), and no larger than an image: anything else at ``path``
    (a link planted there, a hard link that is also someone else's file, a directory, a
    device, a file larger than any image the card writes) is not the card's to
    overwrite and is left alone (said in the log); the atomic write that follows replaces the
    name. Failing to overwrite is logged, never raised: the self-destruct goes on regardless
    (the zeroised image and a new device key replace both files next).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("self-destruct: %s not overwritten in place: %s", path, exc.strerror)
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > MAX_IMAGE_BYTES:
            log.warning("self-destruct: %s is not the card's own file: not overwritten", path)
            return
        write_all(fd, bytes(st.st_size))
        os.fsync(fd)
    except OSError as exc:
        log.warning("self-destruct: %s not overwritten in place: %s", path, exc.strerror)
    finally:
        os.close(fd)


class MemoryStorage:
    """In-memory storage, for fast in-process tests and fuzzing."""

    def __init__(self, image: bytes | None = None, device_key: bytes | None = None) -> None:
        self.image = image
        self.device_key = device_key
        self.writes = 0

    def read_image(self) -> bytes | None:
        """The image bytes."""
        return self.image

    def write_image(self, data: bytes) -> None:
        """Replace the image."""
        self.image = bytes(data)
        self.writes += 1

    def wipe_image(self) -> None:
        """Zero the image."""
        if self.image is not None:
            self.image = bytes(len(self.image))

    def wipe_device_key(self) -> None:
        """Zero the device key."""
        if self.device_key is not None:
            self.device_key = bytes(len(self.device_key))

    def read_device_key(self) -> bytes | None:
        """The device key."""
        return self.device_key

    def write_device_key(self, key: bytes) -> None:
        """Set the device key."""
        self.device_key = bytes(key)


class Eeprom:
    """Encrypts, authenticates and atomically persists :class:`Image` under the device key."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._image_key: AESGCM | None = None
        self.pin_key = b""
        #: the time mark of the image last read or written (what survives a power cut now):
        #: the card writes a mark moved only by an opened code once it is
        #: ``rom.TIME_MARK_STEP`` past this (EEPROM wear; see Card.keep_time_mark)
        self.kept_time_mark = 0

    def _use_device_key(self, key: bytes) -> None:
        self._image_key = AESGCM(derive_key(key, b"safescan eeprom v1"))
        self.pin_key = derive_key(key, b"safescan pin verifier v1")

    def load(self, model: int = 1) -> Image:
        """Power-on read. Manufactures a blank image (of ``model``) on a virgin chip; raises
        ImageError."""
        key = self.storage.read_device_key()
        data = self.storage.read_image()
        if key is None and data is None:
            key = secrets.token_bytes(DEVICE_KEY_BYTES)
            self.storage.write_device_key(key)
            self._use_device_key(key)
            image = Image.manufacture(model)
            self.write(image)
            return image
        if key is None or len(key) != DEVICE_KEY_BYTES:
            raise ImageError("the device key is missing or malformed")
        self._use_device_key(key)
        if data is None:
            raise ImageError("the EEPROM image is missing")
        image = self.decode(data)
        self.kept_time_mark = image.time_mark
        return image

    def decode(self, data: bytes) -> Image:
        """Decrypt and parse one image."""
        if self._image_key is None:
            raise ImageError("no device key")
        head = len(_AAD) + NONCE_BYTES
        if len(data) > MAX_IMAGE_BYTES or len(data) < head + 16 or data[: len(_AAD)] != _AAD:
            raise ImageError("the EEPROM image is truncated or has the wrong format")
        try:
            plain = self._image_key.decrypt(data[len(_AAD) : head], data[head:], _AAD)
        except InvalidTag:
            raise ImageError("the EEPROM image fails its MAC: modified or corrupt") from None
        return Image.from_cbor(plain)

    def encode(self, image: Image) -> bytes:
        """Encrypt one image (fresh nonce)."""
        if self._image_key is None:
            raise ImageError("no device key")
        nonce = secrets.token_bytes(NONCE_BYTES)
        return _AAD + nonce + self._image_key.encrypt(nonce, image.to_cbor(), _AAD)

    def write(self, image: Image) -> None:
        """Persist ``image`` (its generation is bumped first); returns once durable."""
        image.generation += 1
        self.storage.write_image(self.encode(image))
        self.kept_time_mark = image.time_mark

    def destroy(self, image: Image) -> None:
        """Self-destruct write: wipe the old image and device key, fuse a new device key,
        then persist the zeroised image under it.

        The old device key is what opened every earlier image: kept, any earlier copy of
        ``STATE`` (a backup, the blocks an atomic write left behind) would open again, keys
        and all. A crash at any step leaves an image that does not open (zeros, or under
        another key), which destroys again at power-on.
        """
        self.storage.wipe_image()
        self.storage.wipe_device_key()
        key = secrets.token_bytes(DEVICE_KEY_BYTES)
        self.storage.write_device_key(key)
        self._use_device_key(key)
        self.write(image)
