"""A persisted high-water mark of trusted time: a device clock set back cannot make an old
revocation list look current.

A version-3 revocation list is relied on until its signed ``next_update`` + the grace
(:meth:`safescan.code.certs.RevocationList.is_stale`), judged by a clock. The device's clock
is the attacker's to set (a shop's Wi-Fi answering NTP, malware, someone holding the phone),
so the wallet (:mod:`safescan.wallet.crlcache`) and the POS sealing cache
(:mod:`safescan.merchant.sealing`) judge freshness at :meth:`TimeFloor.at`: the latest of

* the device clock now,
* the newest time the institution *signed* that the holder has verified (``issued_at`` of a
  revocation list or scheme key list): true time is at least that, whatever the device says,
* the newest device time the holder has seen (the clock was there once; going back later is
  not believed for freshness).

Both marks only go up and are kept in a small file (written with
:func:`safescan.code.atomicfile.write_atomic`, read bounded and without following links).
The file is written when the signed mark moves, when the device mark is put back, or when the
device mark moved by more than :data:`DEVICE_STEP` since the kept one (:func:`worth_keeping`),
not at every check: the clock moves every second, and a write is an atomic replace with two
fsyncs (before: one per revocation check, one per sealed code). What this gives up is bounded
and said: the kept device mark is never more than :data:`DEVICE_STEP` behind the newest device
time seen, so a clock set back is believed for at most that much (each check judges by the
kept marks and its own clock reading); less than the :data:`CLOCK_TOLERANCE` a clock may
already run behind the signed mark, and far less than the attacks this answers (a list is
relied on for a day and a half; a clock set back by hours or days is refused as before).
A device clock more than :data:`CLOCK_TOLERANCE` behind the newest signed time is a clock
that is wrong (set back): the holder refuses with its typed error rather than judge anything
by it (:meth:`TimeFloor.behind`).

A clock once far *ahead* would leave the device mark in the future and every list stale; an
institution list newer (by its signed ``issued_at``) than any signed time seen, and current by
the device clock, shows the mark was wrong: :meth:`TimeFloor.corrected` resets it. A replayed
list cannot do that (it is never newer than the newest signed time already seen).

Deleting the file forgets the device mark (not the signed one: every cached list carries its
own ``issued_at``); a damaged file is reported and replaced, never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from safescan.code import strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.certs import RevocationList
from safescan.code.smallfile import read_bounded

#: how far (seconds) a device clock may run behind the newest signed time before it is
#: refused as wrong (a few minutes of drift are normal; a list is re-signed every 12 h)
CLOCK_TOLERANCE = 600
#: how far (seconds) the device mark may move forward before the file is written again: the
#: kept mark is at most this far behind the newest device time seen (see the module docstring)
DEVICE_STEP = 180
#: the file's largest size read (it holds two integers)
FILE_LIMIT = 4096
_MAX = 1 << 40  # seconds: far past any real date, well inside every integer type used


class TimeFloorDamaged(ValueError):
    """The file does not hold the two marks (the holder reports it and starts again)."""


@dataclass(frozen=True)
class TimeFloor:
    """The newest institution-signed time verified (``signed``) and device time seen
    (``device``), Unix seconds (0: none)."""

    signed: int = 0
    device: int = 0

    def at(self, now: int) -> int:
        """The time freshness is judged at: the latest of ``now`` (the device clock) and
        both marks."""
        return max(now, self.signed, self.device)

    def behind(self, now: int) -> int:
        """How many seconds the device clock ``now`` runs behind the newest signed time
        (0 or less: not behind)."""
        return self.signed - now

    def observed(self, now: int, *signed: int) -> TimeFloor:
        """This floor after seeing the device clock at ``now`` and verified ``signed`` times."""
        return TimeFloor(max(self.signed, *signed, 0), max(self.device, now))

    def corrected(self, now: int) -> TimeFloor:
        """The device mark put back to ``now`` (at least the signed mark): called only when an
        institution list newer than every signed time seen is current by the device clock, so
        the device mark was left by a clock once ahead."""
        return TimeFloor(self.signed, max(now, self.signed))

    def to_bytes(self) -> bytes:
        """The file's contents."""
        return json.dumps({"signed": self.signed, "device": self.device}).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> TimeFloor:
        """Strict: a JSON object with exactly ``signed`` and ``device``, plain integers in
        range; anything else is :class:`TimeFloorDamaged`."""
        try:
            data.decode("ascii")
            doc = strictjson.loads(data)  # a mark named twice is damage, not the last one
        except (UnicodeDecodeError, ValueError):
            raise TimeFloorDamaged("not the JSON of a time floor") from None
        if not isinstance(doc, dict) or set(doc) != {"signed", "device"}:
            raise TimeFloorDamaged("not the two marks of a time floor")
        values = [doc["signed"], doc["device"]]
        if any(type(v) is not int or not 0 <= v < _MAX for v in values):
            raise TimeFloorDamaged("a mark that is not a time")
        return cls(values[0], values[1])


def advance(
    floor: TimeFloor, now: int, signed: Iterable[int], answer: RevocationList | None = None
) -> tuple[TimeFloor, bool]:
    """``floor`` after the device clock read ``now`` and the holder verified lists signed at
    ``signed``; ``answer``: the institution's list just fetched, when it is the newest the
    holder has. True when the device mark was put back (:meth:`TimeFloor.corrected`): the
    answer is newer than every signed time seen before and current by the device clock, yet
    stale by the mark."""
    after = floor.observed(now, *signed)
    if (
        answer is not None
        and answer.issued_at > floor.signed
        and not answer.is_stale(now)
        and answer.is_stale(after.at(now))
    ):
        return after.corrected(now), True
    return after, False


def worth_keeping(kept: TimeFloor, now: TimeFloor) -> bool:
    """Whether ``now`` (the floor after a check) must be written over ``kept`` (the floor the
    file holds): the signed mark moved, the device mark was put back (:meth:`TimeFloor.corrected`)
    or moved forward by more than :data:`DEVICE_STEP`. Otherwise the kept device mark stays
    within :data:`DEVICE_STEP` of the newest device time seen, and nothing is written."""
    if now.signed != kept.signed or now.device < kept.device:
        return True
    return now.device - kept.device > DEVICE_STEP


def load(path: Path) -> tuple[TimeFloor, str | None]:
    """The floor kept at ``path`` (empty when there is none) and, when the file is damaged (a
    link, a directory, too large, not the two marks), what is wrong with it: the holder tells
    its user and starts from the marks it can still prove (the lists' own ``issued_at``)."""
    try:
        raw = read_bounded(path, FILE_LIMIT, "a time floor", own=True)
    except FileNotFoundError:
        return TimeFloor(), None
    except OSError as exc:
        return TimeFloor(), f"the record of trusted time {path} cannot be read: {exc.strerror}"
    try:
        return TimeFloor.from_bytes(raw), None
    except TimeFloorDamaged as exc:
        return TimeFloor(), f"the record of trusted time {path} is damaged ({exc})"


def save(path: Path, floor: TimeFloor) -> str | None:
    """Keep ``floor`` at ``path`` (atomically). A write that fails (a full disk, a read-only
    directory) leaves the file as it was and is returned as what went wrong, for the holder to
    report (the wallet: a notice; the POS: a typed refusal), never passed over in silence."""
    try:
        write_atomic(path, floor.to_bytes())
    except OSError as exc:
        return f"the record of trusted time {path} cannot be written: {exc.strerror or exc}"
    return None


__all__ = [
    "CLOCK_TOLERANCE",
    "DEVICE_STEP",
    "TimeFloor",
    "TimeFloorDamaged",
    "advance",
    "load",
    "save",
    "worth_keeping",
]
