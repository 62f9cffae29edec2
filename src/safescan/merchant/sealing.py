"""Merchant-side sealing (issue #14): the terminal seals merchant-signed dynamic codes itself.

With its certified code-signing key and the institution's *published* scheme public key only
(no institution secret), the terminal makes the same sealed code the institution would, and the
institution pays it once (the order is recorded when it is paid). When the institution is
reachable the terminal fetches and caches what it needs; when it is not, it keeps sealing from
the cache until the cached certificate or scheme key would expire under a new code.

Files, next to the POS configuration (``pos.json`` -> ``pos-seal/``), all written atomically::

    code-signing.key   the merchant's Ed25519 code-signing key: sealed PKCS#8 (mode 0600)
    certificate.cbor   its institution certificate (version 2: the certified identity)
    scheme-keys.cbor   the institution-signed scheme key list (``GET /v1/keys``)
    revocations.cbor   the newest institution-signed revocation list seen
    checked_at         when the cache was last refreshed from the institution
    trusted-time       the newest institution-signed time verified and terminal time seen
    newest-lists       the newest ``issued_at`` of each list kept (:class:`ListMarks`)

Everything cached is verified under the institution keys pinned in the POS configuration,
every time it is used: a tampered cache is refused, never sealed with. The revocation list
obeys the wallet's freshness rule (:meth:`RevocationList.is_stale`, docs/protocol.md
"Revocation list freshness"): the cache keeps the newest list by ``(sequence, issued_at)``
(the institution's re-signed list replaces it, a replayed older one does not), and the
terminal does not seal with a version-3 list past its ``next_update`` + 12 h
(:class:`SealingListStale`), and does not adopt one at refresh either (the institution's answer
stale and nothing newer held: a replay, or a wrong clock; the previous cache is kept). The time
it judges by is the latest of its clock and the marks in ``trusted-time``
(:mod:`safescan.code.timefloor`): a clock set back does not make an old list current, and a
clock more than :data:`~safescan.code.timefloor.CLOCK_TOLERANCE` behind a list's signed
``issued_at`` is :class:`SealingClockBehind`.

Neither list goes back across processes (:class:`ListMarks`, the wallet's rule for its
revocation list, ``revocation_list_rolled_back``): ``newest-lists`` keeps the newest signed
``issued_at`` of the revocation list and of the scheme key list the terminal kept, and a cached
list issued before it (an older genuine list swapped into ``revocations.cbor`` or
``scheme-keys.cbor``, or the revocation list removed) is :class:`SealingListRolledBack`, as is
a refresh where the institution's answer and the cache are both older (a stale or malicious
institution, a proxy serving an old copy). Before: a version-1/2 revocation list (no
``next_update``) and the scheme key list were bounded by nothing, so an old list swapped in
sealed under a certificate revoked since, or to a scheme key since retired.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.api.errors import NotFound
from safescan.client.answers import OrderView
from safescan.client.errors import InstitutionUnreachable
from safescan.code import strictjson, timefloor
from safescan.code.atomicfile import write_atomic
from safescan.code.certs import (
    MAX_CERT_BYTES,
    Certificate,
    RevocationList,
    Role,
    TrustStore,
    verify_certificate,
)
from safescan.code.currency import currency as lookup_currency
from safescan.code.envelope import Issuer, encode_text, seal
from safescan.code.errors import CertificateExpired, SafescanError
from safescan.code.keys import SigningKey, write_private_file
from safescan.code.payment import NONCE_BYTES, DynamicCode, LineItem
from safescan.code.schemelist import SchemeKeyList
from safescan.code.smallfile import read_bounded
from safescan.merchant.client import MerchantApi, Order
from safescan.merchant.config import PosConfig, default_path

#: Order ids of codes sealed by the terminal itself start with this (the institution's own
#: order ids never do), so the terminal knows the institution learns of them only when paid.
LOCAL_PREFIX = "L-"
CACHE_LIMIT = 1 << 22  # bytes: the most a cached list file is read for (the parsers' bound)
REFRESH_AFTER = 600  # seconds between refreshes of the cache while the institution is reachable
RENEW_BEFORE = 7 * 86400  # renew the certificate when less validity than this is left
CERT_DAYS = 90


class SealingError(SafescanError):
    """Local sealing is not set up, or its cached material cannot be used."""

    code = "pos_sealing_error"


class SealingListStale(SealingError):
    """The cached revocation list is past its signed ``next_update`` + the grace
    (:data:`safescan.code.certs.STALE_GRACE`): offline, a revoked merchant certificate could
    not be told apart, so nothing is sealed until an online refresh fetches a current list."""

    code = "pos_revocation_list_stale"


class SealingClockBehind(SealingError):
    """The terminal's clock reads more than :data:`safescan.code.timefloor.CLOCK_TOLERANCE`
    earlier than a time the institution signed (a list's ``issued_at``): it was set back or is
    wrong, so no list, certificate or code validity can be judged by it; nothing is sealed."""

    code = "pos_clock_behind"


class SealingListRolledBack(SealingError):
    """A list the terminal would seal with (its revocation list or scheme key list) is older,
    by its signed ``issued_at``, than one it kept before (``newest-lists``): the cache was
    swapped for an older genuine list or removed, or the institution answered an older one and
    the cache holds nothing newer. Nothing is sealed until a refresh gets a current list."""

    code = "pos_list_rolled_back"


#: the file keeping the newest ``issued_at`` of each list kept (:class:`ListMarks`)
MARKS_FILE = "newest-lists"
_MARKS_LIMIT = 4096
_MAX_TIME = 1 << 40


@dataclass(frozen=True)
class ListMarks:
    """The newest signed ``issued_at`` of the revocation list and of the scheme key list the
    terminal kept (0: none yet). Only ever raised; a list older than its mark was rolled back.
    Kept per list: the scheme key list is signed at each ``GET /v1/keys``, so it is nearly
    always newer than the revocation list and one mark for both would refuse a current list."""

    revocations: int = 0
    scheme_keys: int = 0

    def raised(self, revocations: int, scheme_keys: int) -> ListMarks:
        """These marks after keeping lists issued at the given times."""
        return ListMarks(max(self.revocations, revocations), max(self.scheme_keys, scheme_keys))

    def to_bytes(self) -> bytes:
        """The file's contents."""
        doc = {"revocations": self.revocations, "scheme_keys": self.scheme_keys}
        return json.dumps(doc).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> ListMarks:
        """Strict: exactly the two marks, plain integers in range (``ValueError`` otherwise)."""
        data.decode("ascii")  # UnicodeDecodeError: a ValueError
        doc = strictjson.loads(data)
        if not isinstance(doc, dict) or set(doc) != {"revocations", "scheme_keys"}:
            raise ValueError("not the marks of the newest lists")
        values = [doc["revocations"], doc["scheme_keys"]]
        if any(type(v) is not int or not 0 <= v < _MAX_TIME for v in values):
            raise ValueError("a mark that is not a time")
        return cls(values[0], values[1])


def sealing_dir(config: PosConfig) -> Path:
    """``pos.json`` -> ``pos-seal/`` next to it."""
    base = config.path if config.path is not None else default_path()
    return base.with_name(base.stem + "-seal")


def is_local(order_id: str) -> bool:
    """Whether an order's code was sealed by the terminal (not precreated at the institution)."""
    return order_id.startswith(LOCAL_PREFIX)


class LocalSealer:
    """Seal merchant-signed dynamic codes on the terminal (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        merchant_id: str,
        trust: TrustStore,
        passphrase: bytes,
        currency: str = "EUR",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = directory
        self.merchant_id = merchant_id
        self.pinned = TrustStore(dict(trust.institution_keys))  # the root keys, nothing else
        self.currency = currency
        self._passphrase = passphrase
        self.clock = clock
        self._key: SigningKey | None = None

    @classmethod
    def for_config(
        cls, config: PosConfig, passphrase: bytes, *, clock: Callable[[], float] = time.time
    ) -> LocalSealer:
        """The sealer of the terminal configured by ``config`` (its files in ``pos-seal/``)."""
        return cls(
            sealing_dir(config),
            merchant_id=config.merchant_id,
            trust=config.trust,
            passphrase=passphrase,
            currency=config.currency,
            clock=clock,
        )

    def now(self) -> int:
        """Unix seconds."""
        return int(self.clock())

    def _path(self, name: str) -> Path:
        return self.dir / name

    # --- online: set up and refresh ------------------------------------------------------

    def has_key(self) -> bool:
        """Whether the code-signing key exists (``setup`` creates it)."""
        return self._path("code-signing.key").exists()

    def setup(self, api: MerchantApi, *, days: int = CERT_DAYS) -> dict[str, Any]:
        """Create the code-signing key if there is none, then refresh: certify it (unless a
        valid certificate for it is cached) and fetch the scheme keys and revocation list."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.has_key():
            SigningKey.generate().save(self._path("code-signing.key"), self._passphrase)
        self.refresh(api, days=days)
        return self.status()

    def _signing_key(self) -> SigningKey:
        if self._key is None:
            path = self._path("code-signing.key")
            if not path.exists():
                raise SealingError(
                    "local sealing is not set up: run `safescan pos seal-setup` while online"
                )
            self._key = SigningKey.load(path, self._passphrase)
        return self._key

    def _certify(self, api: MerchantApi, days: int, at: int) -> Certificate:
        key = self._signing_key()
        doc = api.certificates.create(key.public_key.raw, days)
        cert = self._check_certificate(doc, key, at)
        write_private_file(self._path("certificate.cbor"), cert.to_bytes())
        return cert

    def _check_certificate(self, data: bytes, key: SigningKey, at: int) -> Certificate:
        # at the trusted time ``at`` (before: the terminal's clock alone), as sealing judges it
        cert = Certificate.from_bytes(data)
        verify_certificate(cert, self._trust(), role=Role.MERCHANT, now=at)
        if cert.public_key != key.public_key or cert.subject != self.merchant_id:
            raise SealingError("the certificate is not for this terminal's key and merchant")
        return cert

    def refresh(self, api: MerchantApi, *, days: int = CERT_DAYS) -> None:
        """Fetch the scheme key list and revocation list; (re)certify the key when there is no
        usable certificate for it: none, revoked, about to expire, or not this key's."""
        # a cached file that does not verify is never used, and here it is replaced by the
        # institution's verified one (before: refresh raised on it, so the terminal could
        # not seal again until someone deleted the file by hand)
        trust, held = self._trust_and_list(damaged_ok=True)
        listed = api.keys.scheme_key_list()
        newest = SchemeKeyList.from_bytes(listed, trust)  # verified before it is cached
        crl = api.revocations.signed()
        fresh = RevocationList.from_bytes(crl, trust)
        # newest by (sequence, issued_at): the institution's re-signed list replaces the cache
        # (before: only a higher sequence did, so the cached issue went stale); a replayed
        # older list never does
        adopt = held is None or fresh.freshness > held.freshness
        best = fresh if adopt or held is None else held
        try:
            cached = self._cached_list(trust, required=False)
        except (SafescanError, OSError):
            cached = None
        write_list = cached is None or newest.issued_at >= cached.issued_at  # never roll back
        kept_list = newest if write_list or cached is None else cached
        now = self.now()
        signed = [newest.issued_at, fresh.issued_at, *([] if held is None else [held.issued_at])]
        at = self._trusted_time(now, signed, fresh if adopt else None).at(now)
        if best.is_stale(at):
            # before: adopted here and refused only when sealing; now refused at once, and
            # nothing of this answer is cached (the previous lists stay)
            raise SealingListStale(
                f"the newest revocation list the terminal can get (sequence {best.sequence})"
                f" was current until {_utc(best.next_update or 0)}, and the institution sent"
                " nothing newer: a replayed answer, or this terminal's clock is wrong; the"
                " cached lists are kept and nothing is sealed"
            )
        # both the answer and the cache older than a list kept before: a stale or malicious
        # institution (or a proxy's old copy) over a cache swapped back; nothing is cached
        marks = self._check_marks(best, kept_list, "the institution's answer nor the cache")
        if write_list:
            write_private_file(self._path("scheme-keys.cbor"), listed)
        if adopt:
            write_private_file(self._path("revocations.cbor"), crl)
        self._keep_marks(marks, best, kept_list)
        cert = self._certificate(required=False)
        if (
            cert is None
            or cert.serial in fresh.serials
            or cert.subject in fresh.subjects
            or cert.not_after - at < RENEW_BEFORE  # at trusted time, as sealing judges it
            or cert.merchant is None
            or cert.public_key != self._signing_key().public_key
            or cert.subject != self.merchant_id
        ):
            self._certify(api, days, at)
        write_private_file(self._path("checked_at"), str(now).encode())

    def refresh_if_due(self, api: MerchantApi) -> bool:
        """Refresh when the cache is older than :data:`REFRESH_AFTER`; an unreachable
        institution is not an error here (the terminal works offline). True if refreshed."""
        try:
            checked = self._checked_at()
        except (OSError, ValueError):
            checked = 0
        # a checked_at in the future is a clock that went back (or was ahead when it was
        # written): refresh now (before: nothing was refreshed until the clock caught up, so
        # a terminal online learned of no revocation or key retirement for that long)
        if 0 <= self.now() - checked < REFRESH_AFTER:
            return False
        try:
            self.refresh(api)
        except InstitutionUnreachable:
            return False
        return True

    def _trusted_time(
        self, now: int, signed: Sequence[int], answer: RevocationList | None = None
    ) -> timefloor.TimeFloor:
        """The marks freshness is judged by (:mod:`safescan.code.timefloor`; the time:
        ``.at(now)``): the marks in ``trusted-time`` raised to ``now`` and the verified
        ``signed`` times and kept;
        :class:`SealingClockBehind` when ``now`` is too far behind the newest signed time.
        ``answer``: the institution's list just fetched, when it is the newest (it may put
        back a device mark left by a clock once ahead)."""
        path = self._path("trusted-time")
        floor, damage = timefloor.load(path)
        after, _ = timefloor.advance(floor, now, signed, answer)
        if damage is not None or timefloor.worth_keeping(floor, after):
            unsaved = timefloor.save(path, after)
            if unsaved is not None:
                raise SealingError(
                    f"{unsaved}: nothing was sealed; free space or fix the"
                    " directory's permissions, then seal again"
                )
        if after.behind(now) > timefloor.CLOCK_TOLERANCE:
            raise SealingClockBehind(
                f"this terminal's clock reads {_utc(now)}, but the institution signed a list at"
                f" {_utc(after.signed)}: the clock is behind (set back, or wrong); set it right,"
                " then seal again"
            )
        return after

    def _marks(self) -> ListMarks:
        """The marks kept in ``newest-lists`` (none when it is missing or damaged: it is
        written again from the lists held; deleting it forgets them, a limit said in
        docs/threat-model.md K15)."""
        try:
            raw = read_bounded(self._path(MARKS_FILE), _MARKS_LIMIT, "list marks", own=True)
            return ListMarks.from_bytes(raw)
        except (OSError, ValueError):
            return ListMarks()

    def _check_marks(
        self, crl: RevocationList | None, listed: SchemeKeyList | None, held: str
    ) -> ListMarks:
        """The kept marks; :class:`SealingListRolledBack` when the newest revocation list or
        scheme key list ``held`` is older than its mark (or there is no revocation list while
        one was kept)."""
        marks = self._marks()
        for what, issued, mark in (
            ("revocation list", None if crl is None else crl.issued_at, marks.revocations),
            ("scheme key list", None if listed is None else listed.issued_at, marks.scheme_keys),
        ):
            if mark and (issued is None or issued < mark):
                has = "none" if issued is None else f"one issued {_utc(issued)}"
                raise SealingListRolledBack(
                    f"this terminal kept a {what} issued {_utc(mark)}, but neither {held} holds"
                    f" one as new ({has}): a list swapped back or removed, or an old answer"
                    " replayed; a certificate revoked or a key retired since could not be told"
                    " apart, so nothing is sealed: refresh online (`safescan pos seal-setup`)"
                )
        return marks

    def _keep_marks(
        self, marks: ListMarks, crl: RevocationList | None, listed: SchemeKeyList | None
    ) -> None:
        after = marks.raised(
            0 if crl is None else crl.issued_at, 0 if listed is None else listed.issued_at
        )
        if after == marks:
            return
        try:
            write_atomic(self._path(MARKS_FILE), after.to_bytes())
        except OSError as exc:
            raise SealingError(
                f"the record of the newest lists cannot be written ({exc.strerror or exc}):"
                " nothing was sealed; free space or fix the directory's permissions"
            ) from None

    # --- offline: seal -------------------------------------------------------------------

    def _trust(self, *, damaged_ok: bool = False) -> TrustStore:
        """The pinned keys plus the cached revocation list (:meth:`_trust_and_list`)."""
        return self._trust_and_list(damaged_ok=damaged_ok)[0]

    def _trust_and_list(
        self, *, damaged_ok: bool = False
    ) -> tuple[TrustStore, RevocationList | None]:
        """The pinned keys plus the cached revocation list, verified, and that list (``None``
        when none is cached). A list that does not verify (or a link to a device) is
        :class:`SealingError`: nothing is sealed as if nothing were revoked; ``damaged_ok``
        (refresh only) leaves it out, to be replaced."""
        trust = TrustStore(dict(self.pinned.institution_keys))
        path = self._path("revocations.cbor")
        crl: RevocationList | None = None
        if path.exists() or path.is_symlink():
            try:
                raw = read_bounded(path, CACHE_LIMIT, "a revocation list")
                crl = RevocationList.from_bytes(raw, trust)
                trust.apply_revocations(crl)
            except (SafescanError, OSError) as exc:
                if damaged_ok:
                    return TrustStore(dict(self.pinned.institution_keys)), None
                raise SealingError(
                    f"the cached revocation list does not verify ({exc}): run"
                    " `safescan pos seal-setup` online to fetch it again"
                ) from None
        return trust, crl

    def _cached_list(self, trust: TrustStore, *, required: bool = True) -> SchemeKeyList | None:
        path = self._path("scheme-keys.cbor")
        if not path.exists():
            if required:
                raise SealingError("no scheme key list cached: run `safescan pos seal-setup`")
            return None
        try:
            raw = read_bounded(path, CACHE_LIMIT, "a scheme key list", own=True)
        except OSError as exc:
            raise SealingError(f"the cached scheme key list cannot be read: {exc}") from None
        return SchemeKeyList.from_bytes(raw, trust)

    def _certificate(self, *, required: bool = True) -> Certificate | None:
        path = self._path("certificate.cbor")
        if not path.exists():
            if required:
                raise SealingError("no certificate cached: run `safescan pos seal-setup`")
            return None
        try:  # the terminal's own file: bounded, never through a link (review)
            raw = read_bounded(path, MAX_CERT_BYTES, "a certificate", own=True)
        except OSError as exc:
            raise SealingError(f"the cached certificate cannot be read: {exc}") from None
        return Certificate.from_bytes(raw)

    def _checked_at(self) -> int:
        """When the cache was last refreshed; ``OSError``/``ValueError`` when ``checked_at``
        is missing, damaged, a link or not a regular file (bounded, review: it was an
        unbounded ``read_text`` through links)."""
        raw = read_bounded(self._path("checked_at"), 32, "a time stamp", own=True)
        return int(raw.decode("ascii"))

    def make_order(
        self,
        items: Sequence[LineItem],
        *,
        currency: str | None = None,
        expires_in: int = 300,
    ) -> Order:
        """Seal a dynamic code for ``items`` here, without the institution (offline)."""
        self._signing_key()  # not set up: say so first (nothing below can be kept without it)
        trust, crl = self._trust_and_list()
        now = self.now()
        # judged at the trusted time, not the clock alone (before: a clock set back made an
        # old list current again)
        floor = self._trusted_time(now, [] if crl is None else [crl.issued_at])
        at = floor.at(now)
        if crl is not None and crl.is_stale(at):
            back = ""
            if at != now:
                back = (
                    f" (this terminal's clock reads {_utc(now)}, but it already read {_utc(at)}:"
                    " a clock set back does not make a list current again)"
                )
            raise SealingListStale(
                f"the cached revocation list (sequence {crl.sequence}) was current until"
                f" {_utc(crl.next_update or 0)}{back}; offline, a revoked certificate could not"
                " be told apart: connect so the terminal refreshes it (`safescan pos"
                " seal-setup`), then seal again"
            )
        key = self._signing_key()
        cert = self._certificate()
        assert cert is not None
        # the certificate's validity, the code's expiry and the scheme key's retirement are
        # judged at the trusted time too (before: the clock alone, so a clock set back sealed
        # with an expired certificate)
        verify_certificate(cert, trust, role=Role.MERCHANT, now=at)  # revoked, expired...
        if cert.public_key != key.public_key or cert.merchant is None:
            raise SealingError("the cached certificate is not for this terminal's key")
        if cert.merchant.id != self.merchant_id:
            raise SealingError("the cached certificate is for another merchant")
        expires_at = now + expires_in
        if expires_at <= floor.signed:
            # expired at a time the institution signed (never ahead of true time; the device
            # mark may be, left by a clock once ahead: it is not used for this)
            raise SealingClockBehind(
                f"this terminal's clock reads {_utc(now)}, but the institution signed a list at"
                f" {_utc(floor.signed)}: a code stamped by this clock would already be expired;"
                " set the clock right, then seal again"
            )
        if max(expires_at, at + expires_in) > cert.not_after:
            raise CertificateExpired(
                "the code-signing certificate expires before this code would: renew it online"
                " (`safescan pos seal-setup`)"
            )
        listed = self._cached_list(trust)
        assert listed is not None
        # neither list older than one kept before (before: an older genuine list swapped in
        # sealed under a certificate revoked since, or to a retired scheme key)
        marks = self._check_marks(crl, listed, "the cache")
        self._keep_marks(marks, crl, listed)  # a terminal set up before the marks: from now
        scheme = listed.for_sealing(at, max(expires_at, at + expires_in))
        cur = lookup_currency(currency or self.currency)
        code = DynamicCode(
            merchant=cert.merchant,
            order_id=LOCAL_PREFIX + secrets.token_hex(8),
            items=tuple(items),
            total=sum(i.amount for i in items),
            currency=cur.numeric,
            issued_at=now,
            expires_at=expires_at,
            nonce=secrets.token_bytes(NONCE_BYTES),
        ).validated()
        binary = seal(code, Issuer.merchant(key, cert), scheme)
        return Order(
            order_id=code.order_id,
            merchant_id=code.merchant.id,
            code=encode_text(binary),
            total=code.total,
            currency=code.currency,
            expires_at=code.expires_at,
            code_bytes=len(binary),
            items=code.items,
            sealed_here=True,
        )

    def status(self) -> dict[str, Any]:
        """What the terminal can seal with, and until when (JSON-ready)."""
        trust, crl = self._trust_and_list()
        cert = self._certificate(required=False)
        listed = self._cached_list(trust, required=False)
        try:
            checked: int | None = self._checked_at()
        except (OSError, ValueError):
            checked = None
        doc: dict[str, Any] = {"directory": str(self.dir), "checked_at": checked}
        if cert is not None:
            doc["certificate"] = {
                "serial": cert.serial,
                "not_after": cert.not_after,
                "revoked": cert.serial in trust.revoked_serials,
                "merchant": None if cert.merchant is None else cert.merchant.to_cbor(),
            }
        if crl is not None:
            doc["revocation_list"] = {
                "sequence": crl.sequence,
                "issued_at": crl.issued_at,
                "next_update": crl.next_update,
                "stale": crl.is_stale(timefloor.load(self._path("trusted-time"))[0].at(self.now())),
            }
        if listed is not None:
            current = next(k for k in listed.keys if k.key.kid == listed.current_kid)
            doc["scheme_key"] = {"kid": current.key.kid, "retire_at": current.retire_at}
        return doc


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def sealed_order_state(api: MerchantApi, order: Order) -> OrderView | None:
    """The institution's view of a terminal-sealed order: None while it is unpaid (the
    institution records such an order only when it is paid)."""
    try:
        return api.orders.get(order.order_id)
    except NotFound:
        return None
