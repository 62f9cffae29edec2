"""The POS configuration file: where the institution is, who the merchant is, its API key.

A JSON file (mode 0600)::

    {"format": 2,
     "institution_url": "http://127.0.0.1:8080",
     "merchant_id": "M...",
     "api_key_pkcs12": "<base64: the Ed25519 API key, encrypted>",
     "api_public_key": "<64 hex>",
     "trust": {"1": "<64 hex: institution root public key>"},
     "currency": "EUR",
     "tls_ca": "-----BEGIN CERTIFICATE-----..."}

The merchant's API private key is never written in clear: it is a PKCS#12 blob made by
``cryptography`` (PBES2: PBKDF2-HMAC-SHA256 with 600,000 iterations, AES-256-CBC; HMAC-SHA256
integrity) under a passphrase from ``$SAFESCAN_POS_PASSPHRASE``, the file named by
``$SAFESCAN_POS_PASSPHRASE_FILE``, or a prompt on a terminal. Files of the first format hold
``"api_key": "<64 hex seed>"`` in clear; they are refused until ``safescan pos encrypt-key``
rewrites them (:func:`encrypt_legacy`).

Found at ``--config PATH``, else ``$SAFESCAN_POS_CONFIG``, else ``~/.config/safescan/pos.json``.
``trust`` pins the institution keys the POS accepts event and receipt signatures from;
``tls_ca`` (optional: absent, the system's CAs) pins the CA the institution's HTTPS certificate
must chain to (given at onboarding: ``pos onboard --institution-ca FILE``); loading the file pins
it for this process (:func:`safescan.web.pki.pin_ca`).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import pkcs12

from safescan.client.trust import trust_from_json, trust_to_json
from safescan.code import strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey
from safescan.code.rekeying import recover_if_interrupted
from safescan.code.smallfile import read_bounded, read_small_text
from safescan.web.pki import ca_from_pem, pin_ca

ENV_CONFIG = "SAFESCAN_POS_CONFIG"
ENV_PASSPHRASE = "SAFESCAN_POS_PASSPHRASE"  # noqa: S105 - a variable name
ENV_PASSPHRASE_FILE = "SAFESCAN_POS_PASSPHRASE_FILE"  # noqa: S105 - a variable name
KDF_ROUNDS = 600_000  # PBKDF2-HMAC-SHA256 iterations (OWASP's figure for SHA-256)
MIN_PASSPHRASE = 8
FORMAT = 2


class PosConfigError(SafescanError):
    """The POS configuration is missing or invalid."""

    code = "pos_config_error"


def default_path() -> Path:
    """``$SAFESCAN_POS_CONFIG`` (unless it names a ``.toml`` settings file: then that file's
    ``[terminal] file`` is the terminal, see :mod:`safescan.merchant.settings`) or
    ``~/.config/safescan/pos.json``."""
    env = os.environ.get(ENV_CONFIG)
    if env and not env.lower().endswith(".toml"):
        return Path(env)
    return Path.home() / ".config" / "safescan" / "pos.json"


@dataclass
class PosConfig:
    """Everything a merchant terminal needs to talk to the institution."""

    institution_url: str
    merchant_id: str
    api_seed: bytes  # the 32-byte Ed25519 seed of the merchant's API key (secret)
    trust: TrustStore
    currency: str = "EUR"
    path: Path | None = field(default=None, compare=False)
    tls_ca: str | None = None  # PEM of the CA pinned for the institution's HTTPS

    def pin(self) -> None:
        """Verify this process's connections to the institution with :attr:`tls_ca` only."""
        if self.tls_ca is not None:
            pin_ca(self.institution_url, ca_from_pem(self.tls_ca, "tls_ca"))

    @property
    def api_key(self) -> SigningKey:
        """The merchant's API signing key."""
        return SigningKey.from_seed(self.api_seed)

    @property
    def journal_path(self) -> Path:
        """The POS's local order journal (next to the config file)."""
        base = self.path if self.path is not None else default_path()
        return base.with_name(base.stem + "-journal.sqlite3")

    def to_json(self, passphrase: bytes) -> dict[str, Any]:
        """The file's contents, the API key encrypted under ``passphrase``."""
        return {
            "format": FORMAT,
            "institution_url": self.institution_url,
            "merchant_id": self.merchant_id,
            "api_key_pkcs12": base64.b64encode(_encrypt_seed(self.api_seed, passphrase)).decode(),
            "api_public_key": self.api_key.public_key.hex(),
            "trust": trust_to_json(self.trust),
            "currency": self.currency,
            **({"tls_ca": self.tls_ca} if self.tls_ca is not None else {}),
        }

    def save(self, path: Path | None = None, *, passphrase: bytes | None = None) -> Path:
        """Write the file atomically with mode 0600 (passphrase: given, or :func:`passphrase`)."""
        target = Path(path or self.path or default_path())
        data = json.dumps(self.to_json(passphrase or pos_passphrase()), indent=2).encode()
        _write_private(target, data)
        self.path = target
        return target

    @classmethod
    def load(cls, path: Path | None = None, *, passphrase: bytes | None = None) -> PosConfig:
        """Read the file and decrypt the API key (passphrase: given, or :func:`passphrase`)."""
        target = Path(path or default_path())
        recover_if_interrupted(target.parent)  # a `pos rekey` killed midway: put back first
        doc = _read(target)
        if "api_key" in doc:
            raise PosConfigError(
                f"{target} holds the merchant's API key in clear (first format): encrypt it"
                f" with `safescan pos encrypt-key --config {target}`"
            )
        try:
            blob = base64.b64decode(str(doc["api_key_pkcs12"]), validate=True)
            seed = _decrypt_seed(blob, passphrase or pos_passphrase(), target)
            ca = doc.get("tls_ca")
            cfg = cls(
                institution_url=str(doc["institution_url"]),
                merchant_id=str(doc["merchant_id"]),
                api_seed=seed,
                trust=trust_from_json(doc["trust"]),
                currency=str(doc.get("currency", "EUR")),
                path=target,
                tls_ca=None if ca is None else str(ca),
            )
            cfg.pin()
            return cfg
        except KeyError as exc:
            raise PosConfigError(f"{target} lacks the field {exc.args[0]!r}") from None
        except binascii.Error:
            raise PosConfigError(f"{target}: api_key_pkcs12 is not base64") from None


def encrypt_legacy(path: Path | None = None, *, passphrase: bytes | None = None) -> Path:
    """Migrate a first-format file (API key in clear) to an encrypted one, in place.

    The new file replaces the old atomically (same name, mode 0600): no copy of the clear key
    is left next to it. Raises :class:`PosConfigError` if the file is not of the first format.
    """
    target = Path(path or default_path())
    doc = _read(target)
    if "api_key" not in doc:
        raise PosConfigError(f"{target} does not hold a clear API key: nothing to encrypt")
    try:
        seed = bytes.fromhex(str(doc["api_key"]))
        SigningKey.from_seed(seed)
        cfg = PosConfig(
            institution_url=str(doc["institution_url"]),
            merchant_id=str(doc["merchant_id"]),
            api_seed=seed,
            trust=trust_from_json(doc["trust"]),
            currency=str(doc.get("currency", "EUR")),
        )
    except KeyError as exc:
        raise PosConfigError(f"{target} lacks the field {exc.args[0]!r}") from None
    except (ValueError, SafescanError):
        raise PosConfigError(f"{target}: api_key must be a 32-byte hex seed") from None
    return cfg.save(target, passphrase=passphrase)


def pos_passphrase() -> bytes:
    """The passphrase of the POS key: ``$SAFESCAN_POS_PASSPHRASE``, the file named by
    ``$SAFESCAN_POS_PASSPHRASE_FILE``, or a prompt when a person is at a terminal."""
    value = os.environ.get(ENV_PASSPHRASE)
    if value is None and os.environ.get(ENV_PASSPHRASE_FILE):
        try:
            lines = read_small_text(Path(os.environ[ENV_PASSPHRASE_FILE])).splitlines()
        except OSError as exc:
            raise PosConfigError(f"cannot read {ENV_PASSPHRASE_FILE}: {exc.strerror}") from None
        value = lines[0] if lines else ""
    if value is None and sys.stdin.isatty():
        value = getpass.getpass("POS key passphrase: ")
    if value is None:
        raise PosConfigError(
            f"the POS key is encrypted: set {ENV_PASSPHRASE} or {ENV_PASSPHRASE_FILE}"
        )
    if len(value.encode()) < MIN_PASSPHRASE:
        raise PosConfigError(f"the POS key passphrase must have at least {MIN_PASSPHRASE} bytes")
    return value.encode()


def _encrypt_seed(seed: bytes, passphrase: bytes) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise PosConfigError(f"the POS key passphrase must have at least {MIN_PASSPHRASE} bytes")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase)
    )
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return pkcs12.serialize_key_and_certificates(
        b"safescan-pos-api-key", key, None, None, encryption
    )


def _decrypt_seed(blob: bytes, passphrase: bytes, target: Path) -> bytes:
    try:
        key, _cert, _cas = pkcs12.load_key_and_certificates(blob, passphrase)
    except ValueError:
        raise PosConfigError(
            f"cannot decrypt the API key in {target}: wrong passphrase or corrupt file"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PosConfigError(f"{target} does not hold an Ed25519 API key")
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _read(target: Path) -> dict[str, Any]:
    try:
        doc = strictjson.loads(read_bounded(target))
    except FileNotFoundError:
        raise PosConfigError(
            f"no POS configuration at {target}: run `safescan pos onboard` or give --config"
        ) from None
    except (OSError, ValueError) as exc:
        raise PosConfigError(f"cannot read the POS configuration {target}: {exc}") from None
    if not isinstance(doc, dict):
        raise PosConfigError(f"{target} is not a JSON object")
    return doc


def _write_private(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
