"""The token factory: certifies each chip's attestation key (the manufacturing step).

A virgin chip makes its own Ed25519 attestation key at first power-on (it never leaves the
chip). On the production line the factory reads the public key, device id and model (GET
INFO), issues an attestation certificate under its manufacturer key and fuses it into the chip
(PUT DATA ``01 02``, once, while BLANK). The institution trusts the manufacturer's public key
(``safescan institution manufacturer add``) and enrolls only carriers whose keys an attested
chip generated (:mod:`safescan.code.attestation`).

A factory key directory (``safescan carrier factory init DIR``) holds ``manufacturer.pem``
(the Ed25519 key, sealed PKCS#8 under a passphrase, mode 0600) and ``factory.json`` (key
id, next certificate serial).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from safescan.carrier.client import CarrierClient
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import ConditionsNotSatisfied
from safescan.code import strictjson
from safescan.code.attestation import CarrierModel, issue_attestation_certificate
from safescan.code.certs import Certificate
from safescan.code.errors import InvalidAmount, KeyFileError
from safescan.code.keys import SigningKey, VerifyKey, write_private_file
from safescan.code.numbers import json_int
from safescan.code.smallfile import read_bounded

PASSPHRASE_ENV = "SAFESCAN_FACTORY_PASSPHRASE"  # noqa: S105 - a variable name
ATTESTATION_YEARS = 20


@dataclass
class Factory:
    """A manufacturer key (id ``kid``) that certifies chips' attestation keys."""

    key: SigningKey
    kid: int
    next_serial: int = 1
    directory: Path | None = None
    passphrase: bytes = b""

    @classmethod
    def generate(cls, kid: int = 1) -> Factory:
        """A fresh in-memory factory (tests, demos)."""
        return cls(SigningKey.generate(), _check_kid(kid))

    @property
    def public_key(self) -> VerifyKey:
        """The manufacturer's public key: what an institution trusts."""
        return self.key.public_key

    def pin(self) -> str:
        """``KID:HEX``, the form ``safescan institution manufacturer add`` takes."""
        return f"{self.kid}:{self.public_key.hex()}"

    def certify(
        self,
        device_id: bytes,
        model: CarrierModel,
        attestation_key: VerifyKey,
        *,
        now: int | None = None,
    ) -> Certificate:
        """An attestation certificate for one chip (the serial counter advances)."""
        now = int(time.time()) if now is None else now
        cert = issue_attestation_certificate(
            self.key,
            self.kid,
            serial=self.next_serial,
            device_id=device_id,
            model=model,
            attestation_key=attestation_key,
            not_before=now - 86400,
            not_after=now + ATTESTATION_YEARS * 365 * 86400,
        )
        self.next_serial += 1
        self._save_index()
        return cert

    def attest(self, client: CarrierClient, *, now: int | None = None) -> Certificate:
        """The manufacturing step on a connected BLANK chip: certify its attestation key and
        fuse the certificate. Raises ``ConditionsNotSatisfied`` if it has one already."""
        client.select()
        info = client.get_info()
        if info.lifecycle is not Lifecycle.BLANK or info.attestation_key is None:
            raise ConditionsNotSatisfied("only a blank chip can be attested")
        if info.attestation_certificate is not None:
            raise ConditionsNotSatisfied("this chip already has an attestation certificate")
        cert = self.certify(info.device_id, info.model, info.attestation_key, now=now)
        client.put_attestation(cert.to_bytes())
        return cert

    # --- the key directory -----------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, passphrase: bytes, *, kid: int = 1) -> Factory:
        """A new factory key directory; refuses to overwrite one."""
        directory = Path(directory)
        if (directory / "factory.json").exists():
            raise KeyFileError(f"{directory} already holds a factory key; refusing to overwrite")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        factory = cls(SigningKey.generate(), _check_kid(kid), 1, directory, passphrase)
        factory.key.save(directory / "manufacturer.pem", passphrase)
        factory._save_index()
        return factory

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> Factory:
        """Open a factory key directory (``KeyFileError`` on a wrong passphrase)."""
        directory = Path(directory)
        try:
            doc = strictjson.loads(
                read_bounded(directory / "factory.json", 1 << 16, "factory.json")
            )
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            # JSON integers only (int() read "1_0", "١", 1.9 and true before)
            kid = json_int(doc["kid"], field="kid", minimum=0, maximum=0xFFFF)
            serial = json_int(doc["next_serial"], field="next_serial", maximum=2**63 - 1)
        except (OSError, ValueError, KeyError, TypeError, InvalidAmount):
            raise KeyFileError(f"no factory key in {directory} (run factory init)") from None
        key = SigningKey.load(directory / "manufacturer.pem", passphrase)
        return cls(key, _check_kid(kid), serial, directory, passphrase)

    def _save_index(self) -> None:
        if self.directory is not None:
            doc = {"kid": self.kid, "next_serial": self.next_serial}
            write_private_file(self.directory / "factory.json", json.dumps(doc).encode())


def _check_kid(kid: int) -> int:
    if isinstance(kid, bool) or not isinstance(kid, int) or not 0 <= kid < 0x10000:
        raise KeyFileError("a manufacturer key id is 0-65535")
    return kid


def manufacture(url: str, factory: Factory, *, timeout: float = 10.0) -> Certificate:
    """Attest the blank chip at ``url`` (the factory's programming station)."""
    with CarrierClient.connect(url, timeout=timeout) as client:
        return factory.attest(client)
