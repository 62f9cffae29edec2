"""Staff accounts of the web POS: who may sign in to the counter page and refund.

Kept next to the POS configuration as ``<config>-staff.json`` (mode 0600)::

    {"format": 1, "users": {"ana": {"kdf": "argon2id", "m": 19456, "t": 2, "p": 1,
                                     "salt": "<base64>", "hash": "<base64>", "created_at": 0}}}

Passwords are hashed with Argon2id (``cryptography``'s implementation; OWASP's parameters:
19 MiB, 2 passes, 1 lane) and a random 16-byte salt; checking uses the library's constant-time
``verify``. An unknown name costs the same work as a known one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from safescan.code import strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.errors import SafescanError
from safescan.code.numbers import json_int
from safescan.code.smallfile import read_bounded

MEMORY_KIB = 19 * 1024
PASSES = 2
LANES = 1
MIN_PASSWORD = 10
MAX_PASSWORD = 256
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,31}")
#: the most a staff file may hold (an account is ~200 bytes)
STAFF_FILE_LIMIT = 1 << 20
#: the costs a stored hash may name: a larger memory cost (a planted or damaged record) would
#: make every login with that name allocate it
MAX_MEMORY_KIB = 1 << 20
MAX_PASSES_OR_LANES = 16


class StaffError(SafescanError):
    """A staff account cannot be made, found or read."""

    code = "staff_error"


@dataclass(frozen=True)
class _Hash:
    salt: bytes
    digest: bytes
    m: int = MEMORY_KIB
    t: int = PASSES
    p: int = LANES

    def kdf(self) -> Argon2id:
        return Argon2id(
            salt=self.salt, length=32, iterations=self.t, lanes=self.p, memory_cost=self.m
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kdf": "argon2id",
            "m": self.m,
            "t": self.t,
            "p": self.p,
            "salt": base64.b64encode(self.salt).decode(),
            "hash": base64.b64encode(self.digest).decode(),
        }

    @classmethod
    def from_json(cls, doc: object) -> _Hash:
        if not isinstance(doc, dict) or doc.get("kdf") != "argon2id":
            raise StaffError("a staff password record is not an Argon2id hash")
        try:
            return cls(
                base64.b64decode(doc["salt"], validate=True),
                base64.b64decode(doc["hash"], validate=True),
                json_int(doc["m"], field="m", minimum=8, maximum=MAX_MEMORY_KIB),
                json_int(doc["t"], field="t", maximum=MAX_PASSES_OR_LANES),
                json_int(doc["p"], field="p", maximum=MAX_PASSES_OR_LANES),
            )
        except (KeyError, ValueError, TypeError, SafescanError):
            raise StaffError("a staff password record is corrupt") from None


def hash_password(password: str) -> dict[str, Any]:
    """The stored form of ``password`` (Argon2id, random salt)."""
    check_password_rules(password)
    salt = secrets.token_bytes(16)
    h = _Hash(salt, b"")
    return {
        **_Hash(salt, h.kdf().derive(password.encode())).to_json(),
        "created_at": int(time.time()),
    }


def check_password_rules(password: str) -> None:
    """At least MIN_PASSWORD characters (any characters), at most MAX_PASSWORD."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise StaffError(f"a staff password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def check_name(name: str) -> str:
    """Staff names: a lowercase letter, then up to 31 of ``a-z 0-9 . _ -``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StaffError("a staff name is a lowercase letter then up to 31 of a-z 0-9 . _ -")
    return name


_DUMMY = _Hash(b"\0" * 16, b"\0" * 32)


class StaffStore:
    """The staff file of one POS configuration."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_config(cls, config_path: Path) -> StaffStore:
        """``<config>-staff.json`` next to the configuration file."""
        return cls(config_path.with_name(config_path.stem + "-staff.json"))

    def users(self) -> dict[str, dict[str, Any]]:
        """Every account's stored record (no passwords, only hashes)."""
        try:
            doc = strictjson.loads(read_bounded(self.path, STAFF_FILE_LIMIT, "a staff file"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StaffError(f"cannot read the staff file {self.path}: {exc}") from None
        users = doc.get("users") if isinstance(doc, dict) else None
        if not isinstance(users, dict):
            raise StaffError(f"{self.path} is not a staff file")
        return users

    def add(self, name: str, password: str) -> None:
        """Add an account, or set a new password for an existing one."""
        record = hash_password(password)  # the slow part, before the lock
        with self._changing() as users:
            users[check_name(name)] = record

    def remove(self, name: str) -> None:
        """Remove an account (its sessions end when the POS next checks them)."""
        with self._changing() as users:
            if name not in users:
                raise StaffError(f"no staff account {name!r}")
            del users[name]

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The accounts, read, changed by the caller and written back under the staff file's
        lock (an ``flock`` on ``<file>.lock``; nothing written if the caller raised). Without
        it two changes at once (``pos staff remove`` and ``pos staff add`` in two shells) were
        last-writer-wins: an add that read the file before the removal and wrote it after
        brought the removed account back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StaffError(f"cannot lock the staff file {self.path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            users = self.users()
            yield users
            self._write(users)
        finally:
            os.close(fd)  # the lock goes with it

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s; the same work whether or not ``name`` exists."""
        record = self.users().get(name) if isinstance(name, str) else None
        stored = _Hash.from_json(record) if record is not None else _DUMMY
        try:
            stored.kdf().verify(str(password).encode()[: MAX_PASSWORD * 4], stored.digest)
        except InvalidKey:
            return False
        return record is not None

    def _write(self, users: dict[str, Any]) -> None:
        data = json.dumps({"format": 1, "users": users}, indent=2).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, data)
