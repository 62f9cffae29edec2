"""The institution's private keys, stored encrypted under a passphrase in a key directory.

Layout of the key directory (mode 0700; every file 0600, written atomically)::

    keys.json          index: root key id, scheme key ids (no secrets)
    root-<kid>.pem     Ed25519 root signing key (sealed PKCS#8: code/keyfile.py), unless it is in
                       a PKCS#11 token (``keys.json`` then says which, with its public key;
                       :mod:`.hsm`)
    scheme-<kid>.json  X25519 scheme code key with id and retirement time (sealed PKCS#8)
    secret.json        32-byte server secret (AES-256-GCM under a scrypt-derived key)

The root key signs certificates, dynamic codes, receipts, revocation lists, provisioning
bundles, webhooks and stream events (each with its own context prefix). The server secret keys
the payer pseudonyms (HMAC-SHA256). Nothing here is logged.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from safescan.api.errors import ConfigError
from safescan.code import strictjson
from safescan.code.certs import TrustStore
from safescan.code.errors import KeyFileError, SafescanError
from safescan.code.keys import (
    SchemeKey,
    SchemeKeyring,
    Signer,
    SigningKey,
    VerifyKey,
)
from safescan.code.keys import write_private_file as _write_private
from safescan.code.numbers import MAX_KID, json_int
from safescan.code.rekeying import recover_if_interrupted
from safescan.code.smallfile import LIMIT, read_bounded
from safescan.institution.util import token_hash

#: the most keys.json or secret.json is read for (each under a few KiB; review: read whole)
INDEX_LIMIT = 1 << 20

if TYPE_CHECKING:
    from safescan.institution.hsm import TokenSettings

PASSPHRASE_ENV = "SAFESCAN_INSTITUTION_PASSPHRASE"  # noqa: S105 - a variable name
KEYS_ENV = "SAFESCAN_INSTITUTION_KEYS"
_SCRYPT_N = 2**15


def default_key_dir(db_url: str) -> Path:
    """``<db file>.keys`` for SQLite; for PostgreSQL the key directory must be given."""
    env = os.environ.get(KEYS_ENV)
    if env:
        return Path(env)
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db_url)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a config error
        raise ConfigError(f"not a database URL: {exc}") from None
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database + ".keys")
    raise ConfigError(f"give the key directory with --keys DIR or {KEYS_ENV}")


def load_passphrase(passphrase_file: Path | None) -> bytes:
    """The key passphrase from ``--passphrase-file`` or ``SAFESCAN_INSTITUTION_PASSPHRASE``."""
    if passphrase_file is not None:
        try:
            # at most 4 KiB (before: read_bytes(), a FIFO hung `serve`, /dev/zero read whole)
            value = read_bounded(Path(passphrase_file), LIMIT, "a passphrase file")
            value = value.rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the passphrase file: {exc.strerror}") from None
    else:
        value = os.environ.get(PASSPHRASE_ENV, "").encode()
    if len(value) < 8:
        raise ConfigError(
            f"a key passphrase of at least 8 bytes is required ({PASSPHRASE_ENV} or"
            " --passphrase-file)"
        )
    return value


def _secret_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``secret.json``'s salt, nonce and ciphertext (JSON read by the strict rule: a key named
    twice is refused, never the last one taken); ``ValueError``/``KeyError``/``TypeError``."""
    doc = strictjson.loads(data)
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    salt, nonce, ct = (base64.b64decode(doc[k]) for k in ("salt", "nonce", "ct"))
    return salt, nonce, ct


def _kdf(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(passphrase)


def _secret_file(secret: bytes, passphrase: bytes) -> bytes:
    """``secret.json``: the server secret under AES-256-GCM with a scrypt-derived key."""
    salt, nonce = os.urandom(16), os.urandom(12)
    ct = AESGCM(_kdf(passphrase, salt)).encrypt(nonce, secret, b"safescan-secret")
    doc = {
        "type": "safescan-institution-secret",
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "ct": base64.b64encode(ct).decode(),
    }
    return json.dumps(doc).encode()


@dataclass
class InstitutionKeys:
    """The loaded keys: root signing key(s), scheme keyring, server secret."""

    root_kid: int
    root: Signer
    scheme: SchemeKeyring
    secret: bytes
    extra_roots: dict[int, VerifyKey] = field(default_factory=dict)

    def trust_store(self) -> TrustStore:
        """The institution's own trust store (its public root keys)."""
        keys = dict(self.extra_roots)
        keys[self.root_kid] = self.root.public_key
        return TrustStore(keys)

    def pseudonym(self, merchant_id: str, customer_id: str) -> str:
        """The payer pseudonym a merchant sees: HMAC(secret, merchant | customer), 24 hex."""
        msg = b"pseudonym\0" + merchant_id.encode() + b"\0" + customer_id.encode()
        return "p_" + hmac.digest(self.secret, msg, "sha256").hex()[:24]  # one call, in C

    def token_hash(self, token: str) -> str:
        """Hash of a bearer or enrollment token (see :func:`.util.token_hash`)."""
        return token_hash(token)


class KeyStore:
    """A key directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        """Whether the directory holds an initialised key set."""
        return (self.path / "keys.json").is_file()

    def create(
        self,
        passphrase: bytes,
        *,
        root_kid: int = 1,
        scheme_kid: int = 1,
        token: TokenSettings | None = None,
    ) -> InstitutionKeys:
        """Generate a fresh root key (in the PKCS#11 ``token`` when given, never leaving it),
        first scheme key and server secret; refuse to overwrite."""
        if self.exists():
            raise ConfigError(f"{self.path} already holds institution keys; refusing to overwrite")
        root: Signer
        index: dict[str, Any] = {"root_kid": root_kid, "scheme_kids": [scheme_kid]}
        if token is not None:
            from safescan.institution.hsm import Token

            root = Token(token).generate(root_kid)  # before anything is written here
            index["root"] = {
                "store": "pkcs11",
                "token": token.token_label,
                "public": root.public_key.hex(),
            }
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        if token is None:
            file_root = SigningKey.generate()
            file_root.save(self.path / f"root-{root_kid}.pem", passphrase)
            root = file_root
        scheme = SchemeKey.generate(scheme_kid)
        secret = os.urandom(32)
        scheme.save(self.path / f"scheme-{scheme_kid}.json", passphrase)
        self._save_secret(secret, passphrase)
        self._write_index(index)
        ring = SchemeKeyring()
        ring.add(scheme)
        return InstitutionKeys(root_kid, root, ring, secret)

    def root_store(self) -> str:
        """Where the root key lives: ``file`` or ``pkcs11``."""
        return str(self._index().get("root", {}).get("store", "file"))

    def add_scheme_key(self, passphrase: bytes, *, retire_old_at: int | None) -> SchemeKey:
        """Rotate: add a new scheme key (next id); optionally schedule the old ones' retirement."""
        index = self._index()
        keys = [
            SchemeKey.load(self.path / f"scheme-{k}.json", passphrase) for k in index["scheme_kids"]
        ]
        new_kid = max(k.kid for k in keys) + 1
        if new_kid >= 0x80:  # 0x80-0xFF are the scheme-key epochs' (safescan.code.keyupdate)
            raise ConfigError("no static scheme key ids left (0-127)")
        for key in keys:
            if retire_old_at is not None and key.retire_at is None:
                SchemeKey(key.kid, key.private_key(), retire_old_at).save(
                    self.path / f"scheme-{key.kid}.json", passphrase
                )
        new = SchemeKey.generate(new_kid)
        new.save(self.path / f"scheme-{new_kid}.json", passphrase)
        index["scheme_kids"] = [*index["scheme_kids"], new_kid]
        self._write_index(index)
        return new

    def load(self, passphrase: bytes, *, token: TokenSettings | None = None) -> InstitutionKeys:
        """Load and decrypt every key (raises :class:`KeyFileError` on a wrong passphrase).
        A root key in a PKCS#11 token is opened with ``token`` (default: the configured one,
        :func:`.hsm.configured_token`) and checked against the recorded public key."""
        recover_if_interrupted(self.path)  # a rekey killed midway: every file as it was
        index = self._index()
        root_kid = int(index["root_kid"])
        if token is None:
            from safescan.institution.hsm import configured_token

            token = configured_token()
        root = self._load_root(index, root_kid, passphrase, token)
        ring = SchemeKeyring()
        for kid in index["scheme_kids"]:
            ring.add(SchemeKey.load(self.path / f"scheme-{int(kid)}.json", passphrase))
        return InstitutionKeys(root_kid, root, ring, self._load_secret(passphrase))

    def _load_root(
        self, index: dict[str, Any], kid: int, passphrase: bytes, token: TokenSettings | None
    ) -> Signer:
        where = index.get("root", {"store": "file"})
        store = where.get("store") if isinstance(where, dict) else None
        if store == "file":
            if token is not None:
                raise ConfigError(
                    f"the configuration puts the keys in a PKCS#11 token, but the root key in"
                    f' {self.path} is a file: keep `backend = "file"` for this institution'
                )
            return SigningKey.load(self.path / f"root-{kid}.pem", passphrase)
        if store != "pkcs11":
            raise ConfigError(f"{self.path}/keys.json is corrupt (root key store)")
        from safescan.institution.hsm import HsmKeyError, Token, TokenSettings

        settings = token if token is not None else TokenSettings.from_env()
        if settings.token_label != where.get("token"):
            raise HsmKeyError(
                f"the root key was generated in the token {where.get('token')!r}, but the"
                f" configuration names the token {settings.token_label!r}"
            )
        try:
            public = VerifyKey(bytes.fromhex(str(where.get("public"))))
        except (ValueError, KeyFileError):
            raise ConfigError(f"{self.path}/keys.json is corrupt (root public key)") from None
        return Token(settings).load(kid, public)

    def _index(self) -> dict[str, Any]:
        try:
            doc = strictjson.loads(read_bounded(self.path / "keys.json", INDEX_LIMIT, "keys.json"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"no institution keys in {self.path} (run init first)") from exc
        if not isinstance(doc, dict) or "root_kid" not in doc or "scheme_kids" not in doc:
            raise ConfigError(f"{self.path}/keys.json is corrupt")
        # key ids as written: JSON integers (int() read "1_0", " 1", 1.9 or true as an id, and
        # a text id named a file: scheme-<id>.json)
        kids = doc["scheme_kids"]
        try:
            json_int(doc["root_kid"], field="root_kid", minimum=0, maximum=MAX_KID)
            if not isinstance(kids, list) or not kids:
                raise ConfigError("scheme_kids is not a list of key ids")
            for kid in kids:
                json_int(kid, field="a scheme key id", minimum=0, maximum=0xFF)
        except SafescanError as exc:
            raise ConfigError(f"{self.path}/keys.json is corrupt ({exc.message})") from None
        if not isinstance(doc.get("root", {}), dict):
            raise ConfigError(f"{self.path}/keys.json is corrupt (root key store)")
        return doc

    def _write_index(self, doc: dict[str, Any]) -> None:
        _write_private(self.path / "keys.json", json.dumps(doc).encode())

    def _save_secret(self, secret: bytes, passphrase: bytes) -> None:
        _write_private(self.path / "secret.json", _secret_file(secret, passphrase))

    def open_secret(self, passphrase: bytes) -> bytes:
        """The server secret (:class:`KeyFileError` on a wrong passphrase)."""
        return self._load_secret(passphrase)

    def reseal_secret(self, data: bytes, old: bytes, new: bytes) -> bytes:
        """``secret.json``'s bytes (``data``) sealed under ``new``: opened under ``old``
        first (:class:`KeyFileError` on a wrong passphrase or a damaged file)."""
        try:
            salt, nonce, ct = _secret_parts(data)
            secret = AESGCM(_kdf(old, salt)).decrypt(nonce, ct, b"safescan-secret")
        except (ValueError, KeyError, TypeError, InvalidTag):
            raise KeyFileError(
                "secret.json: cannot read the server secret: wrong passphrase or corrupt file"
            ) from None
        return _secret_file(secret, new)

    def _load_secret(self, passphrase: bytes) -> bytes:
        recover_if_interrupted(self.path)
        try:
            data = read_bounded(self.path / "secret.json", INDEX_LIMIT, "secret.json")
            salt, nonce, ct = _secret_parts(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyFileError("the server secret file is missing or corrupt") from exc
        try:
            return AESGCM(_kdf(passphrase, salt)).decrypt(nonce, ct, b"safescan-secret")
        except InvalidTag:
            raise KeyFileError("cannot read the server secret: wrong passphrase") from None
