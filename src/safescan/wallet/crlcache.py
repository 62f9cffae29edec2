"""The wallet's revocation list: the institution's, else ``crl.cbor``; never silently none.

The wallet checks merchant and carrier certificates against the newest institution-signed
revocation list it can get, and keeps the last one in ``crl.cbor`` for when the institution
cannot be reached. That file is only a cache, but a cache someone can damage, swap or roll
back (another local account, a restored backup, malware), so it is read as untrusted:

* read without following a link (``O_NOFOLLOW``) and at most :data:`CRL_FILE_LIMIT` bytes;
* parsed strictly and verified under the wallet's pinned institution keys;
* a cache that fails any of this is never "no revocation list": online, the institution's
  list replaces it and the customer is told (:attr:`CrlChoice.notices`); offline, it is the
  typed :class:`RevocationListInvalid` and nothing is paid;
* the sequence never goes back: an institution answer older than the cache (a replayed
  list), or than a list this process already used, is not adopted (a notice says so), and
  the cache is only ever replaced by a newer list. The key carrier's own sequence is the
  last check (:func:`safescan.wallet.revocations.update_card`): a wallet list older than the
  one its card already took was rolled back, and the payment is refused;
* an institution answer that does not verify is :class:`RevocationListInvalid` too (before:
  it was silently "none").

* freshness (version-3 lists, which carry a signed ``next_update``): lists are ordered by
  ``(sequence, issued_at)``, so the institution's re-signed current list replaces the cache;
  the wallet never relies on a list past ``next_update`` + :data:`STALE_GRACE`: offline that
  is the typed :class:`RevocationListStale` (connect and try again), and an institution answer
  past it is refused the same way (a replay, or a wrong clock). Online the institution is
  always asked first. Version-1/2 lists carry no ``next_update`` and keep the rules above only
  (docs/protocol.md, "Revocation list freshness").
* the clock freshness is judged by is not the device's alone (:mod:`safescan.code.timefloor`):
  it is the latest of the device clock, the newest ``issued_at`` the wallet verified and the
  newest device time it saw, kept in ``trusted-time`` beside ``crl.cbor``; so a clock set back
  does not make an old list current again, and a device clock more than
  :data:`~safescan.code.timefloor.CLOCK_TOLERANCE` behind a list's signed ``issued_at`` is the
  typed :class:`DeviceClockBehind` (before: the device clock alone, set back, made a list
  current again).
* the newest list held is never older (by ``issued_at``) than one the wallet verified before,
  kept as ``trusted-time``'s signed mark: across processes too, a cache swapped for an older
  genuine list (version 1/2: however old) is the typed :class:`RevocationListRolledBack`.

``tests/test_wallet_crl_cache.py`` attacks each of these (threat-model row K15).
"""

from __future__ import annotations

import contextlib
import errno
import time
from dataclasses import dataclass, field
from pathlib import Path

from safescan.code import timefloor
from safescan.code.atomicfile import write_atomic
from safescan.code.certs import STALE_GRACE, RevocationList, TrustStore
from safescan.code.errors import SafescanError
from safescan.code.smallfile import read_bounded
from safescan.code.timefloor import CLOCK_TOLERANCE
from safescan.wallet.errors import (
    DeviceClockBehind,
    RevocationListInvalid,
    RevocationListRolledBack,
    RevocationListStale,
)

#: the largest ``crl.cbor`` read (the parser's own bound is 4 MiB)
CRL_FILE_LIMIT = 1 << 22
#: the file beside ``crl.cbor`` keeping the high-water marks of trusted time
FLOOR_FILE = "trusted-time"


@dataclass
class CrlChoice:
    """The list the wallet adopts, where it came from, and what the customer must know."""

    crl: RevocationList | None
    raw: bytes | None
    source: str  # "institution", "cache" or "none"
    notices: list[str] = field(default_factory=list)
    #: the marks of trusted time after this check (:mod:`safescan.code.timefloor`): the wallet
    #: judges a code's expiry and a certificate's validity at ``floor.at(now)`` too
    floor: timefloor.TimeFloor = field(default_factory=timefloor.TimeFloor)


def read_cache(path: Path) -> bytes | None:
    """The bytes of ``crl.cbor`` (``None`` when there is none); ``OSError`` for a link, a
    directory, a device or anything larger than :data:`CRL_FILE_LIMIT`."""
    try:
        return read_bounded(path, CRL_FILE_LIMIT, "a revocation list", own=True)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not the wallet's own file") from None
        raise


def choose(
    path: Path,
    trust: TrustStore,
    fetched: bytes | None,
    held: tuple[RevocationList, bytes] | None = None,
    *,
    now: int | None = None,
    floor_path: Path | None = None,
) -> CrlChoice:
    """The newest verified list among the institution's answer (``fetched``; ``None`` when it
    could not be asked), the cache at ``path`` and the one this process already ``held``;
    writes the cache when the institution's is newer. Raises :class:`RevocationListInvalid`
    when the institution's answer does not verify, or when the cache does not and the
    institution could not be asked, and :class:`RevocationListStale` when the newest list is
    a version-3 list past its ``next_update`` + :data:`STALE_GRACE` at the trusted time: the
    latest of ``now`` (Unix seconds; default: the system clock) and the marks kept at
    ``floor_path`` (default: :data:`FLOOR_FILE` beside ``path``; :mod:`safescan.code.timefloor`);
    :class:`DeviceClockBehind` when ``now`` is more than :data:`CLOCK_TOLERANCE` behind a
    verified list's ``issued_at``. The cache is not written when it raises (the marks are:
    what was seen stays seen)."""
    if now is None:
        now = int(time.time())
    if floor_path is None:
        floor_path = path.with_name(FLOOR_FILE)
    notices: list[str] = []
    floor, floor_damage = timefloor.load(floor_path)
    if floor_damage is not None:
        notices.append(f"{floor_damage}: it is written again from what this wallet can verify")
    cached: RevocationList | None = None
    cached_raw: bytes | None = None
    damage: str | None = None
    try:
        cached_raw = read_cache(path)
    except OSError as exc:
        damage = f"cannot be read: {exc.strerror or exc}"
    if cached_raw is not None:
        try:
            cached = RevocationList.from_bytes(cached_raw, trust)
        except SafescanError as exc:
            damage = f"does not verify: {exc.message}"
    got: RevocationList | None = None
    if fetched is not None:
        try:
            got = RevocationList.from_bytes(fetched, trust)
        except SafescanError as exc:
            raise RevocationListInvalid(
                f"the institution's revocation list does not verify ({exc.message}):"
                " someone may be between this wallet and the institution; nothing was paid"
            ) from None
    if damage is not None and got is None:
        raise RevocationListInvalid(
            f"the cached revocation list {path} {damage}; the institution cannot be asked"
            " for a new one, so no certificate can be checked: connect and try again"
        )
    if damage is not None:
        notices.append(
            f"the cached revocation list {damage}; the institution's list is used (and cached)"
        )
    candidates: list[tuple[RevocationList, bytes, str]] = []
    if got is not None and fetched is not None:
        candidates.append((got, fetched, "institution"))
    if cached is not None and cached_raw is not None:
        candidates.append((cached, cached_raw, "cache"))
    if held is not None:
        candidates.append((held[0], held[1], "held"))
    before = floor
    newest = got is not None and got.freshness >= max(c[0].freshness for c in candidates)
    floor, corrected = timefloor.advance(
        floor, now, (c[0].issued_at for c in candidates), got if newest else None
    )
    if corrected:
        # a list newer than any signed time seen, current by the device clock: the device
        # mark was left by a clock once ahead (a replay is never newer than what was seen)
        notices.append(
            "this device's clock once read a later time than the institution's newest list"
            " allows: that reading is no longer relied on"
        )
    if floor_damage is not None or timefloor.worth_keeping(before, floor):
        unsaved = timefloor.save(floor_path, floor)
        if unsaved is not None:
            notices.append(f"{unsaved}; this check still used what it verified now")
    if floor.behind(now) > CLOCK_TOLERANCE:
        raise DeviceClockBehind(
            f"this device's clock reads {_utc(now)}, but the institution signed a revocation"
            f" list at {_utc(floor.signed)}: the clock is behind (set back, or wrong), so no"
            " list, code or certificate can be judged by it; set the clock right and try"
            " again (nothing was paid)"
        )
    if not candidates:
        return CrlChoice(None, None, "none", notices, floor)
    best, best_raw, source = max(candidates, key=lambda c: c[0].freshness)
    if got is not None and got.freshness < best.freshness:
        notices.append(
            f"the institution sent an older revocation list ({_describe(got, best)}) than one this"
            f" wallet already holds ({_describe(best, got)}): the newer one is kept"
        )
    if source == "held":
        # this process already verified a newer list than both: the cache went back
        source = "cache" if got is None else "institution"
    if (
        held is not None
        and got is None
        and cached is not None
        and cached.freshness < best.freshness
    ):
        notices.append(
            f"the cached revocation list ({_describe(cached, best)}) is older than the one this"
            f" wallet already used ({_describe(best, cached)}): the newer one is kept"
        )
    if best.issued_at < before.signed:
        # this wallet verified a list signed later than any it holds now (kept in trusted-time):
        # the cache went back. Version-1/2 lists carry no next_update, so nothing else bounds how
        # old a swapped-in one may be (before: used, offline, however old); version 3 too
        raise RevocationListRolledBack(
            f"this wallet's revocation list (sequence {best.sequence}, issued"
            f" {_utc(best.issued_at)}) is older than one it verified before (issued"
            f" {_utc(before.signed)}): the cached"
            " list was swapped for an older one, or the newer one could not be kept; a merchant"
            " revoked since could not be told apart: connect so the wallet can fetch the"
            " institution's current list, then try again (nothing was paid)"
        )
    _refuse_stale(best, floor.at(now), online=got is not None, device=now)
    if got is not None and (cached is None or best.freshness > cached.freshness):
        with contextlib.suppress(OSError):  # a cache only: the next fetch writes it again
            write_atomic(path, best_raw)
    return CrlChoice(best, best_raw, source, notices, floor)


def _describe(crl: RevocationList, other: RevocationList) -> str:
    """``7``; ``7 issued 2026-12-01 09:00 UTC`` when ``other`` has the same sequence (the same
    list re-signed)."""
    if crl.sequence != other.sequence:
        return str(crl.sequence)
    return f"{crl.sequence} issued {_utc(crl.issued_at)}"


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _refuse_stale(crl: RevocationList, now: int, *, online: bool, device: int) -> None:
    """:class:`RevocationListStale` when ``crl`` (a version-3 list) is past its
    ``next_update`` + :data:`STALE_GRACE` at ``now`` (the trusted time; ``device``: the
    device clock, said when it is earlier: a clock set back does not make a list current)."""
    if not crl.is_stale(now) or crl.next_update is None:
        return
    until = _utc(crl.next_update)
    if not crl.is_stale(device):
        raise RevocationListStale(
            f"this wallet's revocation list (sequence {crl.sequence}) was current until {until};"
            f" this device's clock reads {_utc(device)}, but it already read {_utc(now)} before:"
            " a clock set back does not make a list current again; connect so the wallet can"
            " fetch the institution's current list, then try again (nothing was paid)"
        )
    if online:
        raise RevocationListStale(
            f"the newest revocation list this wallet can get (sequence {crl.sequence}) was"
            f" current until {until}, and the institution sent nothing newer: a replayed"
            " answer, or this device's clock is wrong; nothing was paid"
        )
    raise RevocationListStale(
        f"this wallet's revocation list (sequence {crl.sequence}) was current until {until};"
        " offline, a revoked merchant could not be told apart: connect so the wallet can"
        " fetch the institution's current list, then try again (nothing was paid)"
    )


__all__ = ["CRL_FILE_LIMIT", "FLOOR_FILE", "STALE_GRACE", "CrlChoice", "choose", "read_cache"]
