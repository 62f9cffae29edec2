"""The wallet's cached revocation list attacked (threat-model row K15).

Before: a ``crl.cbor`` that failed to parse or verify (and an institution answer that did not
verify) was silently "no revocation list": the wallet then trusted every merchant and carrier
certificate, revoked or not. Now a damaged cache is replaced by the institution's list with a
notice, or, offline, is the typed ``RevocationListInvalid``; the list's sequence never goes
back (a replayed older institution answer, an older valid list swapped into the cache while
the wallet runs, or one older than the key carrier's own list). No process, no server: the
institution is a stub answering bytes or unreachable; a few Ed25519 signatures per case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from safescan.carrier.client import CarrierClient
from safescan.client.errors import InstitutionUnreachable
from safescan.client.wallet import WalletClient
from safescan.code.certs import RevocationList, TrustStore
from safescan.code.errors import CertificateError
from safescan.code.keys import SigningKey
from safescan.wallet import crlcache
from safescan.wallet.errors import DeviceClockBehind, RevocationListInvalid, RevocationListStale
from safescan.wallet.flow import Wallet
from safescan.wallet.revocations import update_card
from safescan.wallet.store import WalletConfig

ROOT = SigningKey.from_seed(b"\x31" * 32)
OTHER = SigningKey.from_seed(b"\x32" * 32)
REVOKED = 4242
E = TypeVar("E", bound=BaseException)


def _crl(sequence: int, key: SigningKey = ROOT, serials: frozenset[int] | None = None) -> bytes:
    return RevocationList.issue(
        key,
        1,
        sequence=sequence,
        issued_at=1_700_000_000 + sequence,
        serials=frozenset({REVOKED}) if serials is None else serials,
    ).to_bytes()


class _Institution:
    """What ``GET /v1/revocation-list`` answers: bytes, or unreachable (``None``)."""

    def __init__(self) -> None:
        self.answer: bytes | None = None

    def signed(self, scope: str = "all") -> bytes:
        if self.answer is None:
            raise InstitutionUnreachable("offline (test)", maybe_delivered=False)
        return self.answer


@pytest.fixture
def wallet(tmp_path: Path) -> Iterator[tuple[Wallet, _Institution]]:
    config = WalletConfig(
        institution_url="https://127.0.0.1:1",
        carrier_url="tcp://127.0.0.1:9",
        trust=TrustStore({1: ROOT.public_key}),
        carrier_serial=7,
        directory=tmp_path,
    )
    config.save()
    w = Wallet(config)
    stub = _Institution()
    w.api.revocations = stub  # type: ignore[assignment]
    try:
        yield w, stub
    finally:
        w.close()


def _flip(data: bytes) -> bytes:
    return data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:]


def _link_to_valid(path: Path) -> None:
    (path.parent / "elsewhere.cbor").write_bytes(_crl(5))
    path.symlink_to(path.parent / "elsewhere.cbor")


# each writes a damaged crl.cbor into the wallet directory
DAMAGE: dict[str, Callable[[Path], None]] = {
    "flipped_byte": lambda p: p.write_bytes(_flip(_crl(5))),
    "flipped_sequence": lambda p: p.write_bytes(_crl(5).replace(b"\x05", b"\x09", 1)),
    "truncated": lambda p: p.write_bytes(_crl(5)[:-10]),
    "empty": lambda p: p.write_bytes(b""),
    "not_cbor": lambda p: p.write_bytes(b"garbage\n"),
    "signed_by_another_key": lambda p: p.write_bytes(_crl(9, OTHER, frozenset())),
    "symlink_to_a_valid_list": lambda p: _link_to_valid(p),
    "symlink_to_dev_zero": lambda p: p.symlink_to("/dev/zero"),
    "a_directory": lambda p: p.mkdir(),
}


def _snapshot(path: Path) -> Any:
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_dir():
        return ("dir",)
    return ("file", path.read_bytes())


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_offline_is_a_typed_error_never_nothing_revoked(
    wallet: tuple[Wallet, _Institution], damage: str
) -> None:
    w, institution = wallet
    path = w.config.crl_path
    DAMAGE[damage](path)
    before = _snapshot(path)
    institution.answer = None  # offline: the cache is all there is
    with pytest.raises(RevocationListInvalid) as exc:
        w.trust()
    assert exc.value.code == "revocation_list_invalid"
    assert "cached revocation list" in exc.value.message
    assert _snapshot(path) == before  # nothing changed on refusal


@pytest.mark.parametrize("damage", [d for d in DAMAGE if d != "a_directory"])
def test_a_damaged_cache_online_is_replaced_and_the_customer_told(
    wallet: tuple[Wallet, _Institution], damage: str
) -> None:
    w, institution = wallet
    path = w.config.crl_path
    DAMAGE[damage](path)
    elsewhere = path.parent / "elsewhere.cbor"
    linked = elsewhere.read_bytes() if elsewhere.exists() else None
    institution.answer = _crl(6)
    doc = w.status()  # (its carrier cannot be reached: the list and its notice are shown)
    crl = doc["revocation_list"]
    assert crl["source"] == "institution" and crl["sequence"] == 6
    assert crl["revoked_serials"] == 1
    assert any("the institution's list is used" in n for n in crl["notices"])
    assert doc["carrier"]["reachable"] is False
    assert not path.is_symlink() and path.read_bytes() == _crl(6)
    if linked is not None:  # the link was replaced, never written through
        assert elsewhere.read_bytes() == linked


@pytest.mark.parametrize("forgery", ["flipped_byte", "another_key", "truncated", "empty"])
def test_an_institution_answer_that_does_not_verify_is_refused(
    wallet: tuple[Wallet, _Institution], forgery: str
) -> None:
    w, institution = wallet
    path = w.config.crl_path
    path.write_bytes(_crl(5))
    institution.answer = {
        "flipped_byte": _flip(_crl(8)),
        "another_key": _crl(8, OTHER, frozenset()),
        "truncated": _crl(8)[:-3],
        "empty": b"",
    }[forgery]
    with pytest.raises(RevocationListInvalid) as exc:
        w.trust()
    assert "institution's revocation list does not verify" in exc.value.message
    assert path.read_bytes() == _crl(5)  # the cache kept


def test_a_replayed_older_institution_list_never_replaces_the_newer_cache(
    wallet: tuple[Wallet, _Institution],
) -> None:
    w, institution = wallet
    path = w.config.crl_path
    path.write_bytes(_crl(7))
    institution.answer = _crl(5, serials=frozenset())  # genuine, older, revokes nothing
    trust, _ = w.trust()
    assert trust.crl_sequence == 7 and REVOKED in trust.revoked_serials
    assert any("older revocation list (5)" in n for n in w._trust_notices)
    assert path.read_bytes() == _crl(7)


def test_an_older_valid_list_swapped_into_the_cache_is_not_adopted(
    wallet: tuple[Wallet, _Institution],
) -> None:
    w, institution = wallet
    path = w.config.crl_path
    institution.answer = _crl(7)
    assert w.trust()[0].crl_sequence == 7
    path.write_bytes(_crl(3, serials=frozenset()))  # rollback while the wallet runs
    institution.answer = None
    trust, _ = w.trust()
    assert trust.crl_sequence == 7 and REVOKED in trust.revoked_serials
    assert any("older than the one this wallet already used" in n for n in w._trust_notices)


class _Card:
    closed = False

    def close(self) -> None:
        self.closed = True

    def update_revocations(self, crl: bytes) -> int:
        raise AssertionError("a rolled-back list is never handed to the card")


@pytest.mark.parametrize("cache", ["older_valid_list", "removed"])
def test_a_wallet_list_older_than_the_cards_is_refused_before_anything_is_signed(
    wallet: tuple[Wallet, _Institution], cache: str
) -> None:
    w, institution = wallet
    path = w.config.crl_path
    if cache == "older_valid_list":
        path.write_bytes(_crl(3, serials=frozenset()))
    institution.answer = None  # offline, in a fresh process: the cache is all it has
    trust, _ = w.trust()
    card = _Card()
    with pytest.raises(RevocationListInvalid) as exc:
        update_card(cast(WalletClient, w.api), trust, cast(CarrierClient, card), card_sequence=7)
    assert "older than the one its key carrier already holds (7)" in exc.value.message
    assert card.closed


def test_a_genuine_cache_offline_and_no_list_at_all_still_work(
    wallet: tuple[Wallet, _Institution],
) -> None:
    w, _ = wallet
    assert w.trust()[1] == "none"  # a fresh wallet offline, nothing cached: as before
    w.config.crl_path.write_bytes(_crl(5))
    trust, source = w.trust()
    assert source == "cache" and trust.crl_sequence == 5
    assert w._trust_notices == []


# --- freshness: version-3 lists carry a signed next_update (docs/protocol.md) ----------------

T0 = 1_800_000_000  # a fixed clock: no test depends on the time it runs at
DAY = 86400


def _crl3(
    sequence: int,
    issued_at: int = T0,
    next_update: int | None = None,
    key: SigningKey = ROOT,
    serials: frozenset[int] | None = None,
) -> bytes:
    return RevocationList.issue(
        key,
        1,
        sequence=sequence,
        issued_at=issued_at,
        next_update=issued_at + DAY if next_update is None else next_update,
        serials=frozenset({REVOKED}) if serials is None else serials,
    ).to_bytes()


def _at(w: Wallet, t: int) -> None:
    w.clock = lambda: float(t)


@pytest.mark.parametrize("late", [1, 30 * DAY])
def test_offline_a_list_past_its_next_update_and_the_grace_is_refused(
    wallet: tuple[Wallet, _Institution], late: int
) -> None:
    """Offline, a genuine list older than its next_update + grace (kept too long, or an old
    one swapped in: the K15 limit) is the typed RevocationListStale saying until when it was
    current, never a payment against an out-of-date list; at the edge it is still used."""
    w, institution = wallet
    path = w.config.crl_path
    path.write_bytes(_crl3(5))
    institution.answer = None
    _at(w, T0 + DAY + crlcache.STALE_GRACE)  # the last second it is relied on
    assert w.trust()[0].crl_sequence == 5
    late_at = T0 + DAY + crlcache.STALE_GRACE + late
    error = _refused_in_a_fresh_process(w, institution, late_at, RevocationListStale)
    assert error.code == "revocation_list_stale"
    assert isinstance(error, RevocationListInvalid)  # every caller refuses it already
    assert "current until 2027-01-16 08:00 UTC" in error.message
    assert "connect" in error.message and "nothing was paid" in error.message
    assert path.read_bytes() == _crl3(5)  # nothing written on refusal


def test_online_the_institution_is_asked_and_its_resigned_list_replaces_the_cache(
    wallet: tuple[Wallet, _Institution],
) -> None:
    """Online the institution's list is always fetched: the same sequence re-signed later
    (what keeps a list current while nothing is revoked) replaces the cache, and carries
    the wallet past the old list's next_update once offline again."""
    w, institution = wallet
    path = w.config.crl_path
    path.write_bytes(_crl3(5))
    later = T0 + 2 * DAY
    institution.answer = _crl3(5, issued_at=later)
    _at(w, later + 60)
    assert w.trust()[0].crl_sequence == 5 and path.read_bytes() == _crl3(5, issued_at=later)
    institution.answer = None
    _at(w, later + DAY + crlcache.STALE_GRACE)  # long past the first list's next_update
    assert w.trust()[0].crl_sequence == 5


def test_a_replayed_older_issue_of_the_same_list_is_not_adopted(
    wallet: tuple[Wallet, _Institution],
) -> None:
    """A man in the middle (or a restored backup) answers the same sequence issued earlier:
    it is older by (sequence, issued_at), so the newer issue is kept and the customer told."""
    w, institution = wallet
    path = w.config.crl_path
    newer = _crl3(5, issued_at=T0 + DAY)
    path.write_bytes(newer)
    institution.answer = _crl3(5, serials=frozenset())  # genuine, earlier, revokes nothing
    _at(w, T0 + DAY + 60)
    trust, _ = w.trust()
    assert REVOKED in trust.revoked_serials and path.read_bytes() == newer
    assert any("older revocation list (5 issued" in n for n in w._trust_notices)


def test_a_replayed_list_past_its_next_update_is_refused_even_online(
    wallet: tuple[Wallet, _Institution],
) -> None:
    """The institution's answer is a genuine but expired list and nothing newer is held (a
    replay, or this device's clock is wrong): refused, never adopted or cached."""
    w, institution = wallet
    path = w.config.crl_path
    institution.answer = _crl3(4, serials=frozenset())
    _at(w, T0 + 10 * DAY)
    with pytest.raises(RevocationListStale) as exc:
        w.trust()
    assert "a replayed answer, or this device's clock is wrong" in exc.value.message
    assert not path.exists()


@pytest.mark.parametrize("where", ["cache", "institution"])
def test_a_tampered_next_update_is_refused(wallet: tuple[Wallet, _Institution], where: str) -> None:
    """next_update moved later (to make an old list last): the signature no longer verifies,
    from the cache (offline) or from the network."""
    w, institution = wallet
    path = w.config.crl_path
    genuine = RevocationList.from_bytes(_crl3(5), TrustStore({1: ROOT.public_key}))
    moved = replace(genuine, next_update=T0 + 20 * DAY).to_bytes()
    assert moved != _crl3(5)
    _at(w, T0 + 10 * DAY)
    if where == "cache":
        path.write_bytes(moved)
        institution.answer = None
        message = "cached revocation list"
    else:
        path.write_bytes(_crl3(4))
        institution.answer = moved
        message = "institution's revocation list does not verify"
    with pytest.raises(RevocationListInvalid) as exc:
        w.trust()
    assert message in exc.value.message and exc.value.code == "revocation_list_invalid"


def test_the_version_3_format_is_strict_and_older_versions_still_parse() -> None:
    trust = TrustStore({1: ROOT.public_key})
    crl = RevocationList.from_bytes(_crl3(5), trust)
    assert (crl.sequence, crl.issued_at, crl.next_update) == (5, T0, T0 + DAY)
    assert crl.serials == {REVOKED} and crl.to_bytes() == _crl3(5)
    assert RevocationList.from_bytes(_crl(5), trust).next_update is None  # version 1
    v2 = RevocationList.issue(ROOT, 1, sequence=2, issued_at=T0, serials=set(), subjects={"m1"})
    assert RevocationList.from_bytes(v2.to_bytes(), trust).next_update is None
    # signed by the institution, but a next_update no holder should accept
    for bad in (T0, T0 - 1, T0 + 31 * DAY + 1):
        with pytest.raises(CertificateError, match="next_update"):
            RevocationList.from_bytes(_crl3(5, next_update=bad), trust)
    assert RevocationList.from_bytes(_crl3(5, next_update=T0 + 31 * DAY), trust)


def test_the_institutions_wallet_list_is_dated_and_signed_again_before_it_goes_stale(
    tmp_path: Path,
) -> None:
    """The institution's list for wallets (scope all) is version 3: next_update a day after
    issued_at, signed again (same sequence, later issued_at) once 12 h old, so a wallet
    online at least every 12 h + a day + the grace never meets a stale list; the card's list
    (scope merchant) keeps the version-1/2 format its firmware takes. In process (SQLite)."""
    from safescan.institution.domain.certificates import CRL_RESIGN, CRL_VALIDITY
    from tests.institution.dispatch import make_institution

    inst = make_institution(tmp_path)
    try:
        now = [T0]
        inst.certificates.core.clock = lambda: float(now[0])
        first = inst.certificates.revocation_list("all")
        assert (first.issued_at, first.next_update) == (T0, T0 + CRL_VALIDITY)
        card = inst.certificates.revocation_list("merchant")
        assert card.next_update is None and card.to_bytes()[1] in (1, 2)  # [1, ...] / [2, ...]
        now[0] = T0 + CRL_RESIGN - 1
        assert inst.certificates.revocation_list("all") is first  # still good: not re-signed
        now[0] = T0 + CRL_RESIGN
        again = inst.certificates.revocation_list("all")
        assert again.sequence == first.sequence and again.issued_at == T0 + CRL_RESIGN
        assert again.next_update == T0 + CRL_RESIGN + CRL_VALIDITY
        trust = TrustStore({inst.keys.root_kid: inst.keys.root.public_key})
        cache = tmp_path / "crl.cbor"
        cache.write_bytes(first.to_bytes())
        choice = crlcache.choose(cache, trust, again.to_bytes(), now=now[0])
        assert choice.crl == again and cache.read_bytes() == again.to_bytes()  # adopted
        stale_at = again.next_update + crlcache.STALE_GRACE + 1  # type: ignore[operator]
        with pytest.raises(RevocationListStale):
            crlcache.choose(cache, trust, None, now=stale_at)
    finally:
        inst.db.dispose()


# --- the clock the freshness is judged by (code.timefloor): a device clock set back ----------


def _fresh_wallet(w: Wallet, institution: _Institution, t: int) -> Wallet:
    """Another wallet process on the same directory (nothing held in memory) at clock ``t``."""
    fresh = Wallet(w.config)
    fresh.api.revocations = institution  # type: ignore[assignment]
    _at(fresh, t)
    return fresh


def _refused_in_a_fresh_process(
    w: Wallet, institution: _Institution, t: int, error: type[E], match: str | None = None
) -> E:
    """The revocation check of another wallet process on the same directory at clock ``t``
    raises ``error`` (matching ``match``): the error, for the caller's assertions."""
    fresh = _fresh_wallet(w, institution, t)
    try:
        with pytest.raises(error, match=match) as exc:
            fresh.trust()
    finally:
        fresh.close()
    return exc.value


def test_a_clock_set_back_offline_does_not_make_an_old_list_current(
    wallet: tuple[Wallet, _Institution],
) -> None:
    """Attack: the wallet used its list (issued T0) until 30 days later (the list is stale
    then); the clock is set back to T0 + 1 h (a shop's Wi-Fi answering NTP, malware) and the
    wallet, offline in a fresh process, would judge the old list current by that clock.
    Before: it paid against it. Now the newest device time it saw is kept (``trusted-time``)
    and the list is stale at that time: refused, saying the clock went back."""
    w, institution = wallet
    path = w.config.crl_path
    institution.answer = _crl3(5, serials=frozenset())
    _at(w, T0 + 60)
    assert w.trust()[0].crl_sequence == 5  # online, current
    institution.answer = None
    _at(w, T0 + 30 * DAY)
    with pytest.raises(RevocationListStale):
        w.trust()  # offline 30 days later: stale, as before
    # the clock set back
    error = _refused_in_a_fresh_process(w, institution, T0 + 3600, RevocationListStale)
    assert "a clock set back does not make a list current again" in error.message
    assert path.read_bytes() == _crl3(5, serials=frozenset())  # the cache as it was
    assert (path.parent / crlcache.FLOOR_FILE).exists()


def test_an_older_list_swapped_in_with_the_clock_set_back_is_refused(
    wallet: tuple[Wallet, _Institution],
) -> None:
    """Attack: the wallet verified a list issued at T0 + 20 days; someone swaps in a genuine
    list from T0 (before a merchant was revoked) and sets the clock back to T0 + 1 h, in a
    fresh process (nothing held). The newest signed time the wallet verified is kept: the
    device clock is 20 days behind it, the typed ``device_clock_behind``."""
    w, institution = wallet
    path = w.config.crl_path
    institution.answer = _crl3(6, issued_at=T0 + 20 * DAY)
    _at(w, T0 + 20 * DAY + 60)
    assert REVOKED in w.trust()[0].revoked_serials
    path.write_bytes(_crl3(5, serials=frozenset()))  # genuine, older, revokes nothing
    institution.answer = None
    error = _refused_in_a_fresh_process(w, institution, T0 + 3600, DeviceClockBehind)
    assert error.code == "device_clock_behind"
    assert isinstance(error, RevocationListInvalid)  # every caller refuses it already
    assert "set the clock right" in error.message


@pytest.mark.parametrize("behind", [crlcache.CLOCK_TOLERANCE + 1, 3 * DAY])
def test_a_device_clock_behind_the_institutions_signed_time_is_a_typed_error(
    wallet: tuple[Wallet, _Institution], behind: int
) -> None:
    """Online, the institution's genuine current list was signed later than this device's
    clock reads (by more than the tolerance): the clock is wrong, refused typed, and the
    list is not cached; within the tolerance it is used."""
    w, institution = wallet
    path = w.config.crl_path
    institution.answer = _crl3(5)
    _at(w, T0 - crlcache.CLOCK_TOLERANCE)
    assert w.trust()[0].crl_sequence == 5  # a few minutes slow: fine
    path.unlink()
    (path.parent / crlcache.FLOOR_FILE).unlink()
    _refused_in_a_fresh_process(w, institution, T0 - behind, DeviceClockBehind)
    assert not path.exists()


def test_a_clock_once_ahead_is_forgotten_when_a_newer_list_arrives(
    wallet: tuple[Wallet, _Institution],
) -> None:
    """A device clock once 40 days ahead leaves its mark; after it is set right the marked
    time makes the current list look stale, until the institution's list is newer than any
    signed time seen and current by the clock: the mark is put back (a notice). A replay of
    the list already seen never does that."""
    w, institution = wallet
    institution.answer = _crl3(5)
    _at(w, T0 + 40 * DAY)  # the clock far ahead (the list is stale by it, refused)
    with pytest.raises(RevocationListStale):
        w.trust()
    _at(w, T0 + 60)  # set right: the same list replayed is still refused
    with pytest.raises(RevocationListStale):
        w.trust()
    institution.answer = _crl3(5, issued_at=T0 + 120)  # re-signed: newer than anything seen
    _at(w, T0 + 180)
    trust, _ = w.trust()
    assert trust.crl_sequence == 5
    assert any("no longer relied on" in n for n in w._trust_notices)
    institution.answer = None
    _at(w, T0 + 240)
    assert w.trust()[0].crl_sequence == 5  # offline too


@pytest.mark.parametrize(
    "damage",
    [b"", b"{}", b'{"signed": 1, "device": -1}', b'{"signed": 1.5, "device": 1}', b"\xff", None],
)
def test_a_damaged_record_of_trusted_time_is_reported_and_written_again(
    wallet: tuple[Wallet, _Institution], damage: bytes | None
) -> None:
    w, institution = wallet
    floor = w.config.crl_path.parent / crlcache.FLOOR_FILE
    if damage is None:
        floor.symlink_to("/dev/zero")
    else:
        floor.write_bytes(damage)
    institution.answer = _crl3(5)
    _at(w, T0 + 60)
    assert w.trust()[0].crl_sequence == 5
    assert any("record of trusted time" in n for n in w._trust_notices)
    assert not floor.is_symlink()
    assert json.loads(floor.read_bytes()) == {"signed": T0, "device": T0 + 60}


def test_a_record_of_trusted_time_that_cannot_be_kept_is_said(
    wallet: tuple[Wallet, _Institution],
) -> None:
    """``trusted-time`` cannot be written (a directory where the file goes; a full disk or a
    read-only directory fail alike): the check still uses what it verified now, and says the
    record was not kept (before: the write's OSError was suppressed in silence)."""
    w, institution = wallet
    floor = w.config.crl_path.parent / crlcache.FLOOR_FILE
    floor.unlink(missing_ok=True)
    floor.mkdir()
    (floor / "keep").write_text("x")  # a non-empty directory: no rename can replace it
    institution.answer = _crl3(5)
    _at(w, T0 + 60)
    assert w.trust()[0].crl_sequence == 5
    assert any("cannot be written" in n for n in w._trust_notices), w._trust_notices


def _count_floor_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write of ``trusted-time`` (its contents), counted where timefloor.save writes."""
    from safescan.code import timefloor

    written: list[bytes] = []
    real = timefloor.write_atomic

    def counting(path: Path, data: bytes, *args: Any, **kwargs: Any) -> None:
        written.append(data)
        real(path, data, *args, **kwargs)

    monkeypatch.setattr(timefloor, "write_atomic", counting)
    return written


def test_trusted_time_is_written_when_it_moves_not_at_every_check(
    wallet: tuple[Wallet, _Institution], monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 revocation checks, 10 s apart (20 minutes), the same list: before, every check
    rewrote ``trusted-time`` (atomic replace + fsync: 120 writes) because the device mark
    moves every second. Now it is written when the signed mark moves (the first check, a
    re-signed list) or the device mark moved by more than DEVICE_STEP: 8 writes. The kept
    device mark is never more than DEVICE_STEP behind the clock's newest reading, so a clock
    set back further than that, in a fresh process, is still judged at the kept mark."""
    from safescan.code.timefloor import DEVICE_STEP, TimeFloor

    w, institution = wallet
    floor_path = w.config.crl_path.parent / crlcache.FLOOR_FILE
    institution.answer = _crl3(5)
    written = _count_floor_writes(monkeypatch)
    checks, step = 120, 10
    for i in range(checks):
        if i == 60:
            institution.answer = _crl3(5, issued_at=T0 + 600)  # re-signed: written at once
        _at(w, T0 + 60 + i * step)
        assert w.trust()[0].crl_sequence == 5
        kept = TimeFloor.from_bytes(floor_path.read_bytes())
        assert 0 <= T0 + 60 + i * step - kept.device <= DEVICE_STEP
        assert kept.signed == (T0 if i < 60 else T0 + 600)
    assert len(written) == 8, [json.loads(b) for b in written]
    assert len(written) <= 2 + checks * step // DEVICE_STEP
    # the attack of test_a_clock_set_back_offline_does_not_make_an_old_list_current, on the
    # coarser mark: 30 days on (stale), then the clock set back in a fresh process
    institution.answer = None
    _at(w, T0 + 30 * DAY)
    with pytest.raises(RevocationListStale):
        w.trust()
    _refused_in_a_fresh_process(
        w, institution, T0 + 3600, RevocationListStale, match="a clock set back"
    )


@pytest.mark.parametrize("version", [2, 3])
def test_an_older_genuine_list_swapped_in_offline_is_refused_with_the_clock_right(
    wallet: tuple[Wallet, _Institution], version: int
) -> None:
    """Attack (the K15 limit; worst for version-1/2 lists, which carry no next_update): the
    wallet verified list 6 (revoking a merchant), issued at T0 + 20 days; someone swaps in the
    genuine list 5 issued two hours before it (revoking nothing), the clock right, the wallet
    offline in a fresh process (nothing held), the card never told of list 6. Before: list 5
    was used, the revoked merchant trusted (a version-2 list however old; a version-3 one
    within its day and a half).
    Now the newest signed time it verified is kept in trusted-time: the typed
    ``revocation_list_rolled_back`` (a kind of ``revocation_list_invalid``), nothing paid;
    online, the institution's current list is used again."""
    w, institution = wallet
    path = w.config.crl_path
    later = T0 + 20 * DAY

    def issue(sequence: int, at: int, serials: frozenset[int]) -> bytes:
        if version == 3:
            return _crl3(sequence, issued_at=at, serials=serials)
        return RevocationList.issue(
            ROOT, 1, sequence=sequence, issued_at=at, serials=serials
        ).to_bytes()

    current = issue(6, later, frozenset({REVOKED}))
    institution.answer = current
    _at(w, later + 60)
    assert REVOKED in w.trust()[0].revoked_serials
    # genuine, older (two hours: a version-3 list still within its window), revokes nothing
    path.write_bytes(issue(5, later - 7200, frozenset()))
    institution.answer = None
    # the clock right
    error = _refused_in_a_fresh_process(w, institution, later + 3600, RevocationListInvalid)
    assert error.code == "revocation_list_rolled_back"
    assert "older than one it verified before" in error.message
    institution.answer = current
    again = _fresh_wallet(w, institution, later + 7200)
    try:
        assert REVOKED in again.trust()[0].revoked_serials
    finally:
        again.close()
    assert path.read_bytes() == current
