"""The institution's root signing key inside a PKCS#11 token (an HSM; SoftHSM2 in the tests).

The key pair is generated in the token (``CKM_EC_EDWARDS_KEY_PAIR_GEN``, Ed25519) with
``CKA_SENSITIVE`` and ``CKA_EXTRACTABLE=false`` (also ``CKA_MODIFIABLE=false`` and
``CKA_COPYABLE=false``): the private key never leaves it; signatures are made by the token
(``CKM_EDDSA``). :class:`TokenKey` is a :class:`safescan.code.keys.Signer`, so everything
that signs for the institution uses it exactly as it uses a key held in memory.

When a token key is loaded, it must be the one the key directory's index names (same public
key), it must have been generated in the token and never been extractable
(``CKA_LOCAL``, ``CKA_ALWAYS_SENSITIVE``, ``CKA_NEVER_EXTRACTABLE``), and a test signature
must verify under the recorded public key; anything else is a typed :class:`HsmError`.

``python-pkcs11`` is an optional extra (``pip install 'safescan[hsm]'``), imported only
here and only when a token is used. The user PIN comes from a file (``SAFESCAN_HSM_PIN_FILE``,
e.g. a systemd credential) or from ``SAFESCAN_HSM_PIN``; it is never logged or printed, and
never taken on a command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.api.errors import ConfigError
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey
from safescan.code.smallfile import read_small_text
from safescan.institution.config import (
    ENV_HSM_MODULE,
    ENV_HSM_PIN,
    ENV_HSM_PIN_FILE,
    ENV_HSM_TOKEN,
    ENV_KEY_BACKEND,
)

ENV_BACKEND = ENV_KEY_BACKEND
ENV_MODULE = ENV_HSM_MODULE
ENV_TOKEN = ENV_HSM_TOKEN
ENV_PIN_FILE = ENV_HSM_PIN_FILE
ENV_PIN = ENV_HSM_PIN
DEFAULT_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)
ED25519_OID = "1.3.101.112"
_CHALLENGE = b"SS1-HSM-CHECK\n"


class HsmError(ConfigError):
    """The PKCS#11 token cannot be used as configured."""

    code = "hsm_error"


class HsmUnavailable(HsmError):
    """No PKCS#11 module, no token with that label, or python-pkcs11 not installed."""

    code = "hsm_unavailable"


class HsmPinIncorrect(HsmError):
    """The token refused the user PIN (or the PIN is locked)."""

    code = "hsm_pin_incorrect"


class HsmKeyError(HsmError):
    """The token lacks the key, holds another one, or holds one that could have been copied."""

    code = "hsm_key_error"


@dataclass(frozen=True)
class TokenSettings:
    """Where the token is: the PKCS#11 module, the token's label, and where its PIN is."""

    module: Path
    token_label: str
    pin_file: Path | None = None
    pin_env: str = ENV_PIN

    @classmethod
    def from_env(cls) -> TokenSettings:
        """From ``SAFESCAN_HSM_MODULE`` (default: Debian's SoftHSM2 module),
        ``SAFESCAN_HSM_TOKEN`` and ``SAFESCAN_HSM_PIN_FILE`` (else ``SAFESCAN_HSM_PIN``)."""
        module = os.environ.get(ENV_MODULE) or next(
            (m for m in DEFAULT_MODULES if Path(m).is_file()), DEFAULT_MODULES[0]
        )
        label = os.environ.get(ENV_TOKEN, "")
        if not label:
            raise HsmUnavailable(f"the keys are in a PKCS#11 token: set {ENV_TOKEN} to its label")
        pin_file = os.environ.get(ENV_PIN_FILE)
        return cls(Path(module), label, Path(pin_file) if pin_file else None)

    def pin(self) -> str:
        """The user PIN (first line of the PIN file, else the environment variable)."""
        if self.pin_file is not None:
            try:
                lines = read_small_text(self.pin_file).splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8"
                raise HsmPinIncorrect(f"cannot read the token PIN file: {reason}") from None
            value = lines[0].strip() if lines else ""
        else:
            value = os.environ.get(self.pin_env, "")
        if not value:
            raise HsmPinIncorrect(
                f"no token PIN: put it in a file named by {ENV_PIN_FILE} (or in {self.pin_env})"
            )
        return value

    def describe(self) -> dict[str, str]:
        """For display: no PIN, only where it comes from."""
        source = f"file {self.pin_file}" if self.pin_file else f"${self.pin_env}"
        return {"module": str(self.module), "token": self.token_label, "pin": source}


def configured_token() -> TokenSettings | None:
    """The token the configuration selects (``SAFESCAN_KEY_BACKEND=pkcs11``), or None for key
    files (``file``, the default)."""
    backend = os.environ.get(ENV_BACKEND, "file") or "file"
    if backend == "file":
        return None
    if backend != "pkcs11":
        raise ConfigError(f"{ENV_BACKEND} is file or pkcs11, not {backend!r}")
    return TokenSettings.from_env()


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise HsmUnavailable(
            "the PKCS#11 key backend needs python-pkcs11: pip install 'safescan[hsm]'"
        ) from None
    return pkcs11


def root_label(kid: int) -> str:
    """The token label (and CKA_ID) of root key ``kid``."""
    return f"safescan-root-{kid}"


def _raw_point(point: bytes) -> bytes:
    """CKA_EC_POINT of an Ed25519 key: the 32 bytes, DER OCTET STRING or bare."""
    if len(point) == 34 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == 32:
        return point
    raise HsmKeyError("the token's public key is not an Ed25519 point")


@dataclass
class _Login:
    """A process's logged-in session with one token (PKCS#11 logs in per process, not per
    session: a second login is refused, so every :class:`Token` of a process shares it)."""

    session: Any
    pin_digest: bytes
    lock: threading.Lock


_LOGINS: dict[tuple[str, str], _Login] = {}
_LOGINS_LOCK = threading.Lock()


class Token:
    """The logged-in session with the token (kept for the life of the process)."""

    def __init__(self, settings: TokenSettings) -> None:
        self.settings = settings
        p11 = _pkcs11()
        self._p11 = p11
        if not settings.module.is_file():
            raise HsmUnavailable(f"no PKCS#11 module at {settings.module}")
        pin = settings.pin()
        digest = hashlib.sha256(pin.encode()).digest()
        key = (str(settings.module), settings.token_label)
        with _LOGINS_LOCK:
            login = _LOGINS.get(key)
            if login is None:
                login = _LOGINS[key] = _Login(self._open(pin), digest, threading.Lock())
            elif not hmac.compare_digest(login.pin_digest, digest):
                raise HsmPinIncorrect(
                    f"the token {settings.token_label!r} is open in this process with another PIN"
                )
        self._login = login
        self.session = login.session

    def _open(self, pin: str) -> Any:
        p11, settings = self._p11, self.settings
        try:
            lib = p11.lib(str(settings.module))
        except (OSError, RuntimeError, p11.exceptions.PKCS11Error) as exc:
            raise HsmUnavailable(
                f"cannot load the PKCS#11 module {settings.module}: {type(exc).__name__}"
            ) from None
        try:
            token = lib.get_token(token_label=settings.token_label)
        except p11.exceptions.NoSuchToken:
            raise HsmUnavailable(
                f"no token labelled {settings.token_label!r} in {settings.module}"
            ) from None
        except p11.exceptions.MultipleTokensReturned:
            raise HsmUnavailable(
                f"several tokens are labelled {settings.token_label!r}: labels must be unique"
            ) from None
        except p11.exceptions.PKCS11Error as exc:
            raise HsmUnavailable(f"the PKCS#11 module failed: {type(exc).__name__}") from None
        try:
            return token.open(user_pin=pin, rw=True)
        except (p11.exceptions.PinIncorrect, p11.exceptions.PinLenRange):
            raise HsmPinIncorrect(
                f"the token {settings.token_label!r} refused the PIN (wrong PIN)"
            ) from None
        except p11.exceptions.PinLocked:
            raise HsmPinIncorrect(
                f"the token {settings.token_label!r} has locked its user PIN (too many wrong"
                " PINs): the security officer must unlock it"
            ) from None
        except p11.exceptions.PKCS11Error as exc:
            raise HsmUnavailable(f"cannot open the token: {type(exc).__name__}") from None

    def close(self) -> None:
        """Log out and close this process's session with the token."""
        with _LOGINS_LOCK:
            key = (str(self.settings.module), self.settings.token_label)
            if _LOGINS.get(key) is self._login:
                del _LOGINS[key]
        with contextlib.suppress(self._p11.exceptions.PKCS11Error):  # closed, or token gone
            self.session.close()

    def _find(self, object_class: Any, label: str) -> list[Any]:
        return list(self.session.get_objects({
            self._p11.Attribute.CLASS: object_class,
            self._p11.Attribute.LABEL: label,
        }))  # fmt: skip

    def generate(self, kid: int) -> TokenKey:
        """Generate root key ``kid`` in the token; refuses when the token already holds one."""
        p11 = self._p11
        a = p11.Attribute
        label = root_label(kid)
        if self._find(p11.ObjectClass.PRIVATE_KEY, label) or self._find(
            p11.ObjectClass.PUBLIC_KEY, label
        ):
            raise HsmKeyError(
                f"the token {self.settings.token_label!r} already holds a key {label!r};"
                " refusing to make a second one"
            )
        try:
            params = self.session.create_domain_parameters(
                p11.KeyType.EC_EDWARDS,
                {a.EC_PARAMS: p11.util.ec.encode_named_curve_parameters(ED25519_OID)},
                local=True,
            )
            public, private = params.generate_keypair(
                mechanism=p11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                store=True,
                label=label,
                id=label.encode(),
                public_template={a.TOKEN: True, a.VERIFY: True, a.PRIVATE: False},
                private_template={
                    a.TOKEN: True,
                    a.PRIVATE: True,
                    a.SENSITIVE: True,
                    a.EXTRACTABLE: False,
                    a.MODIFIABLE: False,
                    a.COPYABLE: False,
                    a.SIGN: True,
                    a.DERIVE: False,
                },
            )
        except (p11.exceptions.MechanismInvalid, p11.exceptions.FunctionNotSupported):
            raise HsmError(
                "the token cannot generate Ed25519 keys (CKM_EC_EDWARDS_KEY_PAIR_GEN): use a"
                " token that supports them (SoftHSM2 >= 2.5)"
            ) from None
        except p11.exceptions.PKCS11Error as exc:
            raise HsmError(f"the token refused to generate the key: {type(exc).__name__}") from None
        raw = _raw_point(bytes(public[a.EC_POINT]))
        return self._checked(private, VerifyKey(raw), kid)

    def load(self, kid: int, public: VerifyKey) -> TokenKey:
        """Root key ``kid``, checked against the ``public`` key the key directory records."""
        p11 = self._p11
        label = root_label(kid)
        found = self._find(p11.ObjectClass.PRIVATE_KEY, label)
        if not found:
            raise HsmKeyError(
                f"the token {self.settings.token_label!r} holds no key {label!r} (wrong token,"
                " or the key was deleted)"
            )
        if len(found) > 1:
            raise HsmKeyError(f"the token holds {len(found)} keys labelled {label!r}")
        return self._checked(found[0], public, kid)

    def _checked(self, private: Any, public: VerifyKey, kid: int) -> TokenKey:
        a = self._p11.Attribute
        label = root_label(kid)
        try:
            flags = {
                "sensitive": bool(private[a.SENSITIVE]),
                "extractable": bool(private[a.EXTRACTABLE]),
                "always sensitive": bool(private[a.ALWAYS_SENSITIVE]),
                "never extractable": bool(private[a.NEVER_EXTRACTABLE]),
                "generated in the token": bool(private[a.LOCAL]),
            }
        except self._p11.exceptions.PKCS11Error as exc:
            raise HsmKeyError(f"cannot read {label!r}'s attributes: {type(exc).__name__}") from None
        wrong = [
            ("" if k == "extractable" else "not ") + k
            for k, v in flags.items()
            if v is (k == "extractable")
        ]
        if wrong:
            raise HsmKeyError(
                f"the token's key {label!r} may have existed outside the token ("
                + ", ".join(wrong)
                + "): only a key generated in the token and never extractable is used"
            )
        key = TokenKey(self, private, public, kid)
        try:
            public.verify(key.sign(_CHALLENGE), _CHALLENGE, what="the token's test signature")
        except SafescanError:
            raise HsmKeyError(
                f"the token's key {label!r} is not the institution's root key {kid} (its"
                " signature does not verify under the recorded public key)"
            ) from None
        return key


class TokenKey:
    """An Ed25519 private key that lives in the token: a :class:`~safescan.code.keys.Signer`."""

    __slots__ = ("_lock", "_private", "_public", "kid", "token")

    def __init__(self, token: Token, private: Any, public: VerifyKey, kid: int) -> None:
        self.token, self._private, self._public, self.kid = token, private, public, kid
        self._lock = token._login.lock  # one operation at a time on the shared session

    def sign(self, message: bytes) -> bytes:
        """The token's Ed25519 signature of ``message`` (CKM_EDDSA)."""
        p11 = self.token._p11
        try:
            with self._lock:
                signature = bytes(self._private.sign(message, mechanism=p11.Mechanism.EDDSA))
        except p11.exceptions.PKCS11Error as exc:
            raise HsmUnavailable(f"the token failed to sign: {type(exc).__name__}") from None
        if len(signature) != 64:
            raise HsmError("the token returned a signature that is not 64 bytes")
        return signature

    @property
    def public_key(self) -> VerifyKey:
        """The public key recorded when the key was generated."""
        return self._public

    def __repr__(self) -> str:
        return f"TokenKey({root_label(self.kid)}, public={self._public.hex()[:16]}...)"


__all__ = [
    "ENV_BACKEND",
    "ENV_MODULE",
    "ENV_PIN",
    "ENV_PIN_FILE",
    "ENV_TOKEN",
    "HsmError",
    "HsmKeyError",
    "HsmPinIncorrect",
    "HsmUnavailable",
    "Token",
    "TokenKey",
    "TokenSettings",
    "configured_token",
    "root_label",
]
