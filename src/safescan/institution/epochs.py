"""Scheme-key epochs on the institution's side: the schedule, the keys, the keyring.

Dynamic codes are sealed to the key of the current **epoch** (:mod:`safescan.code.keyupdate`).
A new epoch starts when the current one is ``length`` seconds old (checked whenever a key is
needed, by whichever API process comes first: the epoch row's primary key makes that race
harmless) or on demand (``safescan institution rotate-epoch``, e.g. right after revoking a
leaked carrier). An epoch's key opens codes until ``retire_at = started_at + length +
retention``; retention covers the longest dynamic code (7 days) plus clock skew, so every code
sealed during an epoch opens until it expires.

Epoch private keys are not stored: each is derived from the server secret (HKDF-SHA256,
``info = "safescan scheme epoch v1" || epoch(8)``), so every API process has every epoch's key
without copying key files, and the database holds only the public half, the key id and the
times (table ``scheme_epochs``). Static-code keys stay in the key directory (ids 0-127).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, func, select

from safescan.api.encoding import b64e
from safescan.api.errors import ConfigError, Conflict
from safescan.code.errors import KeyRetired, SafescanError, UnknownKeyId
from safescan.code.keys import SchemeKey, SchemeKeyring
from safescan.code.keyupdate import MAX_LIVE_EPOCHS, EpochKey, epoch_kid, is_epoch_kid
from safescan.code.numbers import canonical_int
from safescan.code.payment import MAX_DYNAMIC_VALIDITY
from safescan.institution import audit
from safescan.institution.models import SchemeEpoch as SchemeEpochRow
from safescan.institution.sql import insert_ignore

ENV_EPOCH_SECONDS = "SAFESCAN_EPOCH_SECONDS"
ENV_EPOCH_RETENTION = "SAFESCAN_EPOCH_RETENTION_SECONDS"
DEFAULT_LENGTH = 86400
SKEW = 3600
DEFAULT_RETENTION = MAX_DYNAMIC_VALIDITY + SKEW
EPOCH_INFO = b"safescan scheme epoch v1"
#: How long an API process trusts its cached list of epochs for opening codes.
CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class EpochSchedule:
    """How often code keys rotate and how long an old epoch's key keeps opening codes."""

    length: int = DEFAULT_LENGTH
    retention: int = DEFAULT_RETENTION

    def __post_init__(self) -> None:
        if self.retention < DEFAULT_RETENTION:
            raise ConfigError(
                f"the epoch retention must be at least {DEFAULT_RETENTION} s (the longest"
                " dynamic code plus an hour), or codes would outlive their key"
            )
        # a carrier keeps MAX_LIVE_EPOCHS keys: the schedule alone must leave room for
        # a couple of on-demand rotations
        if (self.retention + self.length) // self.length + 1 > MAX_LIVE_EPOCHS - 2:
            shortest = self.retention // (MAX_LIVE_EPOCHS - 4) + 1
            raise ConfigError(
                f"with a retention of {self.retention} s an epoch must last at least"
                f" {shortest} s (a carrier keeps {MAX_LIVE_EPOCHS} epoch keys)"
            )

    @classmethod
    def from_env(cls) -> EpochSchedule:
        """``SAFESCAN_EPOCH_SECONDS`` (default a day) and ``SAFESCAN_EPOCH_RETENTION_SECONDS``."""
        values = []
        for name, default in (
            (ENV_EPOCH_SECONDS, DEFAULT_LENGTH),
            (ENV_EPOCH_RETENTION, DEFAULT_RETENTION),
        ):
            text = os.environ.get(name)
            try:
                # one spelling (before: int() read "1_0", " 86400", "+86400", "８６４００")
                values.append(
                    default if text is None else canonical_int(text, field=name, maximum=2**40)
                )
            except SafescanError as exc:
                raise ConfigError(f"{name} must be a number of seconds: {exc.message}") from None
        return cls(values[0], values[1])


def derive_epoch_key(secret: bytes, epoch: int, retire_at: int) -> SchemeKey:
    """Epoch ``epoch``'s scheme key, derived from the server secret."""
    seed = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=EPOCH_INFO + epoch.to_bytes(8, "big")
    ).derive(secret)
    return SchemeKey(epoch_kid(epoch), X25519PrivateKey.from_private_bytes(seed), retire_at)


class EpochKeyring(SchemeKeyring):
    """The scheme keys that open codes: the static-code keys plus the live epochs' keys.

    :meth:`current` is the key new dynamic codes are sealed to (it starts the next epoch when
    the schedule says so); :meth:`for_opening` looks a key id up. ``keys`` holds the static
    keys and the epoch keys live at the last refresh (at most :data:`CACHE_SECONDS` old).
    """

    def __init__(
        self,
        db: Any,
        static: SchemeKeyring,
        secret: bytes,
        schedule: EpochSchedule | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(dict(static.keys))
        self.db = db
        self.static = static
        self.secret = secret
        self.schedule = schedule or EpochSchedule.from_env()
        self.clock = clock
        self._lock = threading.Lock()
        self._epochs: dict[int, EpochKey] = {}  # by kid, live at the last refresh
        self._refreshed = float("-inf")

    # --- reading ----------------------------------------------------------------------------

    def _load(self, conn: Connection, now: int) -> list[EpochKey]:
        rows = conn.execute(
            select(SchemeEpochRow.epoch, SchemeEpochRow.retire_at)
            .where(SchemeEpochRow.retire_at > now)
            .order_by(SchemeEpochRow.epoch)
        ).all()
        return [
            EpochKey(r.epoch, derive_epoch_key(self.secret, r.epoch, r.retire_at)) for r in rows
        ]

    def refresh(self, now: int | None = None) -> None:
        """Re-read the live epochs from the database."""
        now = int(self.clock()) if now is None else now
        live = self.db.read(lambda conn: self._load(conn, now))
        with self._lock:
            self._epochs = {k.key.kid: k for k in live}
            self.keys = {**self.static.keys, **{k.key.kid: k.key for k in live}}
            self._refreshed = time.monotonic()

    def live(self, now: int | None = None) -> list[EpochKey]:
        """The epochs whose keys still open codes, oldest first (from the database)."""
        now = int(self.clock()) if now is None else now
        self.current(now)
        return list(self.db.read(lambda conn: self._load(conn, now)))

    def for_opening(self, kid: int, now: int) -> SchemeKey:
        """The key with id ``kid`` (static or epoch), if known and not retired at ``now``."""
        if not is_epoch_kid(kid):
            return self.static.for_opening(kid, now)
        if time.monotonic() - self._refreshed > CACHE_SECONDS or kid not in self._epochs:
            self.refresh(now)
        entry = self._epochs.get(kid)
        if entry is None:
            raise UnknownKeyId(f"the code is sealed to scheme key {kid}, which is not live here")
        if entry.key.is_retired(now):
            raise KeyRetired(f"the code is sealed to scheme key {kid}, which has been retired")
        return entry.key

    # --- the current epoch --------------------------------------------------------------------

    def current(self, now: int) -> SchemeKey:
        """The current epoch's key (the one to seal new dynamic codes to); starts the next
        epoch first if the current one is due."""
        return self.current_epoch(now).key

    def current_epoch(self, now: int) -> EpochKey:
        """The current epoch, started by the schedule if due (read from the database)."""
        epoch = self.db.read(lambda conn: _newest(conn))
        if epoch is None or now >= epoch.started_at + self.schedule.length:
            self._start(epoch.epoch + 1 if epoch else 1, now, "schedule")
            epoch = self.db.read(lambda conn: _newest(conn))
            assert epoch is not None
        key = derive_epoch_key(self.secret, epoch.epoch, epoch.retire_at)
        if self._epochs.get(key.kid, None) is None or self._epochs[key.kid].epoch != epoch.epoch:
            self.refresh(now)
        return EpochKey(epoch.epoch, key)

    def rotate(self, now: int) -> EpochKey:
        """Start a new epoch now (on demand). Refused with :class:`Conflict` if carriers would
        have to keep more than :data:`MAX_LIVE_EPOCHS` keys."""
        newest = self.db.read(lambda conn: _newest(conn))
        live = self.db.read(
            lambda conn: conn.execute(
                select(func.count()).where(SchemeEpochRow.retire_at > now)
            ).scalar_one()
        )
        if live >= MAX_LIVE_EPOCHS - 1:
            raise Conflict(
                f"{live} epochs are live: another would exceed the {MAX_LIVE_EPOCHS} keys a"
                " carrier keeps; wait until the oldest retires"
            )
        self._start(newest.epoch + 1 if newest else 1, now, "demand")
        return self.current_epoch(now)

    def _start(self, epoch: int, now: int, reason: str) -> None:
        key = derive_epoch_key(
            self.secret, epoch, now + self.schedule.length + self.schedule.retention
        )

        def tx(conn: Connection) -> None:
            inserted = insert_ignore(
                conn,
                SchemeEpochRow,
                {
                    "epoch": epoch,
                    "kid": key.kid,
                    "public_key": key.public.raw,
                    "started_at": now,
                    "retire_at": key.retire_at,
                    "reason": reason,
                },
            )
            if inserted:
                audit.append(
                    conn,
                    at=now,
                    actor="system" if reason == "schedule" else "admin",
                    action="scheme.epoch",
                    entity="institution",
                    data={
                        "epoch": epoch,
                        "kid": key.kid,
                        "reason": reason,
                        "public_key": b64e(key.public.raw),
                        "retire_at": key.retire_at,
                    },
                )

        self.db.write(tx)
        self.refresh(now)


def _newest(conn: Connection) -> Any:
    return conn.execute(
        select(SchemeEpochRow.epoch, SchemeEpochRow.started_at, SchemeEpochRow.retire_at)
        .order_by(SchemeEpochRow.epoch.desc())
        .limit(1)
    ).first()
