"""The terminal's sealing cache (safescan.merchant.sealing) against a local institution.

The institution here is :class:`LocalInstitution` behind a stand-in for the three calls the
sealer makes (certify, scheme key list, revocation list): these tests are about what the
terminal does with what it receives and caches. The real HTTP path is attacked end to end in
tests/e2e/test_merchant_sealing.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from safescan.carrier.testing import DEFAULT_MERCHANT, LocalInstitution
from safescan.client.errors import InstitutionUnreachable
from safescan.code import (
    Certificate,
    Role,
    SchemeKey,
    SigningKey,
    VerifyKey,
    issue_certificate,
    open_code,
)
from safescan.code.certs import STALE_GRACE, RevocationList
from safescan.code.errors import (
    CertificateExpired,
    CertificateRevoked,
    KeyRetired,
    SafescanError,
    SignatureInvalid,
)
from safescan.code.payment import LineItem
from safescan.code.schemelist import PublishedSchemeKey, SchemeKeyList
from safescan.merchant.sealing import (
    LOCAL_PREFIX,
    REFRESH_AFTER,
    LocalSealer,
    SealingClockBehind,
    SealingError,
    SealingListRolledBack,
    SealingListStale,
)

PASS = b"terminal-passphrase"
ITEMS = [LineItem("Tea", 2, 300)]


@dataclass
class FakeApi:
    """The institution's three answers the sealer needs (or unreachable)."""

    inst: LocalInstitution
    retire_at: int | None = None
    revoked: set[int] = field(default_factory=set)
    sequence: int = 1
    reachable: bool = True
    valid_days: int = 90
    issued: list[Certificate] = field(default_factory=list)
    crl: bytes | None = None  # the revocation list answered, when set (else a version-2 list)
    keys_list: bytes | None = None  # the scheme key list answered, when set (else one now)

    def _up(self) -> None:
        if not self.reachable:
            raise InstitutionUnreachable("the institution cannot be reached")

    def certify_code_key(self, public_key: bytes, valid_days: int) -> bytes:
        self._up()
        cert = issue_certificate(
            self.inst.key,
            self.inst.kid,
            serial=5000 + len(self.issued),
            role=Role.MERCHANT,
            subject=DEFAULT_MERCHANT.id,
            public_key=VerifyKey(public_key),
            not_before=self.inst.now - 60,
            not_after=self.inst.now + self.valid_days * 86400,
            merchant=DEFAULT_MERCHANT,
        )
        self.issued.append(cert)
        return cert.to_bytes()

    def scheme_key_list(self) -> bytes:
        self._up()
        if self.keys_list is not None:
            return self.keys_list
        return SchemeKeyList.issue(
            self.inst.key,
            self.inst.kid,
            issued_at=self.inst.now,
            current_kid=self.inst.scheme.kid,
            keys=[PublishedSchemeKey(self.inst.scheme.public, self.retire_at)],
        ).to_bytes()

    def revocation_list(self) -> bytes:
        self._up()
        if self.crl is not None:
            return self.crl
        return self.inst.revocation_list(self.revoked, sequence=self.sequence)

    # the merchant client's services, as the sealer calls them
    @property
    def certificates(self) -> Any:
        return SimpleNamespace(create=self.certify_code_key)

    @property
    def keys(self) -> Any:
        return SimpleNamespace(scheme_key_list=self.scheme_key_list)

    @property
    def revocations(self) -> Any:
        return SimpleNamespace(signed=lambda scope="all": self.revocation_list())


@pytest.fixture
def inst() -> LocalInstitution:
    return LocalInstitution.create()


def _sealer(
    inst: LocalInstitution, tmp_path: Path, *, at: int | None = None, clock: list[int] | None = None
) -> LocalSealer:
    """A terminal at ``at`` (default the institution's now), or on ``clock[0]`` when given
    (one terminal whose clock a test moves: its key is decrypted once)."""
    now = inst.now if at is None else at
    return LocalSealer(
        tmp_path / "pos-seal",
        merchant_id=DEFAULT_MERCHANT.id,
        trust=inst.trust,
        passphrase=PASS,
        clock=(lambda: now) if clock is None else (lambda: clock[0]),
    )


def _ready(inst: LocalInstitution, tmp_path: Path, api: FakeApi | None = None) -> LocalSealer:
    sealer = _sealer(inst, tmp_path)
    sealer.setup(api or FakeApi(inst))  # type: ignore[arg-type]
    return sealer


def test_sealed_code_opens_with_the_certified_identity(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    order = _ready(inst, tmp_path).make_order(ITEMS, currency="EUR", expires_in=300)
    assert order.sealed_here and order.order_id.startswith(LOCAL_PREFIX)
    opened = open_code(order.code, inst.keyring, inst.trust, now=inst.now)
    assert opened.issuer == "merchant" and opened.code.merchant == DEFAULT_MERCHANT
    assert opened.code.total == 600 and opened.code.expires_at == inst.now + 300


def test_files_are_private_and_the_key_is_encrypted(inst: LocalInstitution, tmp_path: Path) -> None:
    sealer = _ready(inst, tmp_path)
    for path in sealer.dir.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    key_file = (sealer.dir / "code-signing.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in key_file
    with pytest.raises(SafescanError):
        SigningKey.load(sealer.dir / "code-signing.key", b"wrong passphrase")


def test_not_set_up_is_a_clear_error(inst: LocalInstitution, tmp_path: Path) -> None:
    with pytest.raises(SealingError, match="seal-setup"):
        _sealer(inst, tmp_path).make_order(ITEMS)


def test_offline_sealing_until_the_certificate_would_expire(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    api = FakeApi(inst, valid_days=1)
    _ready(inst, tmp_path, api)
    api.reachable = False
    later = _sealer(inst, tmp_path, at=inst.now + 86400 - 400)
    assert later.refresh_if_due(api) is False  # unreachable: keeps the cache
    later.make_order(ITEMS, expires_in=300)
    with pytest.raises(CertificateExpired):
        later.make_order(ITEMS, expires_in=600)  # the code would outlive the certificate
    with pytest.raises(CertificateExpired):
        _sealer(inst, tmp_path, at=inst.now + 86400).make_order(ITEMS, expires_in=60)


def test_offline_sealing_until_the_scheme_key_would_retire(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    _ready(inst, tmp_path, FakeApi(inst, retire_at=inst.now + 3600))
    _sealer(inst, tmp_path, at=inst.now + 3000).make_order(ITEMS, expires_in=300)
    with pytest.raises(KeyRetired):
        _sealer(inst, tmp_path, at=inst.now + 3400).make_order(ITEMS, expires_in=300)


def test_a_revoked_certificate_stops_sealing_and_is_replaced_when_possible(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    api = FakeApi(inst)
    sealer = _ready(inst, tmp_path, api)
    first = api.issued[-1].serial
    api.revoked, api.sequence = {first}, 2
    api.reachable = False
    sealer.refresh_if_due(api)
    sealer.make_order(ITEMS)  # offline, it cannot know yet
    api.reachable = True
    later = _sealer(inst, tmp_path, at=inst.now + REFRESH_AFTER)
    assert later.refresh_if_due(api) is True
    assert api.issued[-1].serial != first  # a new certificate replaced the revoked one
    order = later.make_order(ITEMS)
    assert open_code(order.code, inst.keyring, inst.trust, now=later.now()).certificate
    # the list says revoked and the institution will not certify again: no more codes
    api.revoked, api.sequence = {first, api.issued[-1].serial}, 3

    def refuse(public_key: bytes, valid_days: int) -> bytes:
        raise SealingError("this merchant has been revoked")

    api.certify_code_key = refuse  # type: ignore[method-assign]
    last = _sealer(inst, tmp_path, at=inst.now + 2 * REFRESH_AFTER)
    with pytest.raises(SealingError):
        last.refresh_if_due(api)
    with pytest.raises(CertificateRevoked):
        last.make_order(ITEMS)


def test_tampered_cache_is_refused_never_used(inst: LocalInstitution, tmp_path: Path) -> None:
    sealer = _ready(inst, tmp_path)
    listed = sealer.dir / "scheme-keys.cbor"
    good = listed.read_bytes()
    attacker_key = SchemeKey.generate(inst.scheme.kid)
    forged = SchemeKeyList.issue(
        SigningKey.generate(),
        inst.kid,
        issued_at=inst.now + 1,
        current_kid=attacker_key.kid,
        keys=[PublishedSchemeKey(attacker_key.public, None)],
    )
    listed.write_bytes(forged.to_bytes())
    with pytest.raises(SignatureInvalid):
        sealer.make_order(ITEMS)
    listed.write_bytes(good)
    cert_path = sealer.dir / "certificate.cbor"
    other = FakeApi(inst).certify_code_key(SigningKey.generate().public_key.raw, 30)
    cert_path.write_bytes(other)  # a genuine certificate, for another key
    with pytest.raises(SealingError, match="key"):
        sealer.make_order(ITEMS)


def test_an_older_scheme_key_list_never_replaces_a_newer_one(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    api = FakeApi(inst)
    sealer = _ready(inst, tmp_path, api)
    newer = (sealer.dir / "scheme-keys.cbor").read_bytes()
    old_inst = LocalInstitution(inst.key, inst.kid, SchemeKey.generate(3), inst.now - 100)
    sealer.refresh(FakeApi(old_inst))  # type: ignore[arg-type]
    assert (sealer.dir / "scheme-keys.cbor").read_bytes() == newer


def test_setting_up_again_reuses_a_valid_certificate(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    api = FakeApi(inst)
    sealer = _ready(inst, tmp_path, api)
    sealer.setup(api)  # type: ignore[arg-type]
    assert len(api.issued) == 1  # no second live certificate for the same key
    (sealer.dir / "code-signing.key").unlink()  # a new key: it needs its own certificate
    _sealer(inst, tmp_path).setup(api)  # type: ignore[arg-type]
    assert len(api.issued) == 2
    _sealer(inst, tmp_path).make_order(ITEMS)


def _flip(data: bytes) -> bytes:
    return data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:]


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("revocations.cbor", "flipped_byte"),
        ("revocations.cbor", "signed_by_another_key"),
        ("revocations.cbor", "truncated"),
        ("revocations.cbor", "empty"),
        ("revocations.cbor", "link_to_dev_zero"),
        ("scheme-keys.cbor", "flipped_byte"),
        ("scheme-keys.cbor", "empty"),
        ("scheme-keys.cbor", "link_to_dev_zero"),
    ],
)
def test_a_damaged_cached_list_stops_sealing_and_the_next_refresh_replaces_it(
    inst: LocalInstitution, tmp_path: Path, name: str, damage: str
) -> None:
    """Threat-model K15's POS sibling: a cached revocation or scheme key list that does not
    verify is a typed error, never "nothing revoked" (before: a link to /dev/zero was read
    without bound), and an online refresh replaces it (before: refresh raised on it, so the
    terminal could not seal until someone deleted the file by hand)."""
    api = FakeApi(inst)
    api.sequence = 2
    sealer = _ready(inst, tmp_path, api)
    path = sealer.dir / name
    good = path.read_bytes()
    if damage == "link_to_dev_zero":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif damage == "signed_by_another_key":
        other = LocalInstitution.create()
        path.write_bytes(other.revocation_list(set(), sequence=9))
    else:
        path.write_bytes(
            {"flipped_byte": _flip(good), "truncated": good[:-7], "empty": b""}[damage]
        )
    with pytest.raises(SafescanError):  # offline: nothing sealed
        sealer.make_order(ITEMS)
    sealer.refresh(api)  # type: ignore[arg-type]
    assert not path.is_symlink() and path.read_bytes() == good
    assert sealer.make_order(ITEMS).sealed_here


DAY = 86400


def _v3(inst: LocalInstitution, *, sequence: int, issued_at: int) -> bytes:
    """A genuine version-3 list, current for a day (as the institution issues them)."""
    return RevocationList.issue(
        inst.key,
        inst.kid,
        sequence=sequence,
        issued_at=issued_at,
        serials=set(),
        next_update=issued_at + DAY,
    ).to_bytes()


def test_offline_the_terminal_does_not_seal_with_a_list_past_next_update_and_the_grace(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """Threat-model K15 at the terminal: the wallet's freshness rule (the same
    ``RevocationList.is_stale``) when sealing offline; before, any cached list served forever.
    The edge second still seals; one second past it, and an older genuine list swapped into
    the cache, are the typed ``pos_revocation_list_stale`` and nothing is sealed."""
    t0 = inst.now
    api = FakeApi(inst, crl=_v3(inst, sequence=3, issued_at=t0))
    _ready(inst, tmp_path, api)
    edge = t0 + DAY + STALE_GRACE
    assert _sealer(inst, tmp_path, at=edge).make_order(ITEMS).sealed_here
    for late in (edge + 1, edge + 30 * DAY):
        sealer = _sealer(inst, tmp_path, at=late)
        with pytest.raises(SealingListStale) as err:
            sealer.make_order(ITEMS)
        assert err.value.code == "pos_revocation_list_stale"
        assert "current until" in err.value.message and "connect" in err.value.message
        assert sealer.status()["revocation_list"]["stale"] is True
    # an older genuine list (same sequence, issued two days before) swapped into the cache
    (tmp_path / "pos-seal" / "revocations.cbor").write_bytes(
        _v3(inst, sequence=3, issued_at=t0 - 2 * DAY)
    )
    with pytest.raises(SealingListStale):
        _sealer(inst, tmp_path).make_order(ITEMS)


def test_a_resigned_list_replaces_the_cache_and_a_replayed_older_one_does_not(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """The cache keeps the newest list by (sequence, issued_at): the institution's list
    re-signed 12 h later replaces it (before: only a higher sequence did, so a terminal
    refreshing every 10 minutes still went stale a day and a half after its list's
    sequence last changed), and a replayed older issue or sequence never does."""
    t0 = inst.now
    first = _v3(inst, sequence=3, issued_at=t0)
    api = FakeApi(inst, crl=first)
    _ready(inst, tmp_path, api)
    path = tmp_path / "pos-seal" / "revocations.cbor"
    resigned = _v3(inst, sequence=3, issued_at=t0 + DAY // 2)
    api.crl = resigned
    _sealer(inst, tmp_path, at=t0 + DAY // 2).refresh(api)  # type: ignore[arg-type]
    assert path.read_bytes() == resigned
    for replayed in (first, _v3(inst, sequence=2, issued_at=t0 + DAY)):
        api.crl = replayed
        _sealer(inst, tmp_path, at=t0 + DAY).refresh(api)  # type: ignore[arg-type]
        assert path.read_bytes() == resigned
    # offline past the first issue's limit, within the re-signed one's: it seals
    assert _sealer(inst, tmp_path, at=t0 + DAY + STALE_GRACE + 1).make_order(ITEMS).sealed_here
    with pytest.raises(SealingListStale):  # and past the re-signed one's, it does not
        _sealer(inst, tmp_path, at=t0 + DAY // 2 + DAY + STALE_GRACE + 1).make_order(ITEMS)


def test_a_stale_list_the_institution_answers_is_refused_at_refresh_and_the_cache_kept(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """Attack: the institution's answer (a replay, or a proxy serving an old copy) is a
    genuine list past its next_update + the grace, newer than the cached one by sequence.
    Before: refresh adopted and cached it (the cached, current list gone), and only sealing
    refused. Now refresh refuses it typed, the cached lists stay, and the terminal still
    seals with its current list."""
    t0 = inst.now
    api = FakeApi(inst, crl=_v3(inst, sequence=3, issued_at=t0))
    _ready(inst, tmp_path, api)
    path = tmp_path / "pos-seal" / "revocations.cbor"
    kept = path.read_bytes()
    checked = (tmp_path / "pos-seal" / "checked_at").read_bytes()
    api.crl = _v3(inst, sequence=4, issued_at=t0 - 3 * DAY)  # newer sequence, long stale
    sealer = _sealer(inst, tmp_path, at=t0 + 60)
    with pytest.raises(SealingListStale) as err:
        sealer.refresh(api)  # type: ignore[arg-type]
    assert "a replayed answer, or this terminal's clock is wrong" in err.value.message
    assert path.read_bytes() == kept
    assert (tmp_path / "pos-seal" / "checked_at").read_bytes() == checked
    assert sealer.make_order(ITEMS).sealed_here  # the current cached list still serves


def test_a_clock_set_back_does_not_make_an_old_list_current_for_sealing(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """Attack: the terminal sealed 30 days after its last refresh (refused: stale); its clock
    is then set back to an hour after the list was issued. Before: the old list looked
    current by that clock and the terminal sealed. Now the newest time it saw is kept
    (``trusted-time``): still stale. A clock behind a list's signed issued_at by more than
    the tolerance is the typed ``pos_clock_behind``."""
    t0 = inst.now
    api = FakeApi(inst, crl=_v3(inst, sequence=3, issued_at=t0))
    _ready(inst, tmp_path, api)
    with pytest.raises(SealingListStale):
        _sealer(inst, tmp_path, at=t0 + 30 * DAY).make_order(ITEMS)
    with pytest.raises(SealingListStale) as err:
        _sealer(inst, tmp_path, at=t0 + 3600).make_order(ITEMS)  # the clock set back
    assert "a clock set back does not make a list current again" in err.value.message
    with pytest.raises(SealingClockBehind) as behind:
        _sealer(inst, tmp_path, at=t0 - 3600).make_order(ITEMS)
    assert behind.value.code == "pos_clock_behind"
    # back online with the clock right: the institution's current list lets it seal again
    api.crl = _v3(inst, sequence=3, issued_at=t0 + 30 * DAY)
    later = _sealer(inst, tmp_path, at=t0 + 30 * DAY + 60)
    later.refresh(api)  # type: ignore[arg-type]
    assert later.make_order(ITEMS).sealed_here


@pytest.mark.parametrize("damage", ["link_to_a_certificate", "huge", "fifo"])
def test_the_cached_certificate_is_read_bounded_and_never_through_a_link(
    inst: LocalInstitution, tmp_path: Path, damage: str
) -> None:
    """(review) ``certificate.cbor`` is the terminal's own file: read at most
    ``MAX_CERT_BYTES``, never through a symbolic link, a regular file only; anything else is
    the typed SealingError and nothing is sealed (before: an unbounded ``read_bytes`` that
    followed links: a link to a certificate elsewhere was sealed with)."""
    sealer = _ready(inst, tmp_path)
    path = sealer.dir / "certificate.cbor"
    elsewhere = tmp_path / "elsewhere.cbor"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    if damage == "link_to_a_certificate":
        path.symlink_to(elsewhere)
    elif damage == "huge":
        path.write_bytes(b"\0" * (1 << 20))
    else:
        os.mkfifo(path)
    with pytest.raises(SealingError, match="certificate cannot be read"):
        sealer.make_order(ITEMS)


def test_checked_at_is_read_bounded_and_never_through_a_link(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """(review) ``checked_at`` through a link (to a file saying "just refreshed") is not
    believed: the cache counts as never refreshed and the next chance refreshes it; a huge
    file is not read whole. Before: an unbounded ``read_text`` that followed links."""
    api = FakeApi(inst)
    sealer = _ready(inst, tmp_path, api)
    path = sealer.dir / "checked_at"
    assert sealer.status()["checked_at"] == inst.now
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(str(inst.now))
    path.unlink()
    path.symlink_to(elsewhere)
    assert sealer.status()["checked_at"] is None
    assert sealer.refresh_if_due(api)  # type: ignore[arg-type]
    assert not path.is_symlink() and sealer.status()["checked_at"] == inst.now
    path.write_bytes(b"1" * (1 << 20))
    assert sealer.status()["checked_at"] is None


def test_a_refresh_stamped_in_the_future_does_not_postpone_the_next_one(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """Attack: the terminal's clock ran 3 hours ahead when it refreshed (checked_at 3 h in
    the future), then was set right. Before: ``refresh_if_due`` saw a negative age and did not
    refresh for 3 hours, so an online terminal learned of no revocation for that long (and
    went on sealing with a revoked certificate). Now a checked_at in the future refreshes."""
    api = FakeApi(inst)
    _sealer(inst, tmp_path, at=inst.now + 3 * 3600).setup(api)  # type: ignore[arg-type]
    first = api.issued[-1].serial
    api.revoked, api.sequence = {first}, 2  # revoked meanwhile
    right = _sealer(inst, tmp_path, at=inst.now + 60)
    assert right.refresh_if_due(api) is True  # type: ignore[arg-type]
    assert api.issued[-1].serial != first  # the revoked certificate replaced
    assert right.refresh_if_due(api) is False  # type: ignore[arg-type]


def test_a_record_of_trusted_time_that_cannot_be_kept_refuses_sealing(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """``trusted-time`` cannot be written (here a directory stands where the file goes: a
    full disk or a read-only directory fail the same way): the typed SealingError saying so,
    nothing sealed, never a silent pass (before: the write's OSError was suppressed and the
    terminal sealed while forgetting the time it saw). Writable again: it seals."""
    t0 = inst.now
    _ready(inst, tmp_path)
    floor = tmp_path / "pos-seal" / "trusted-time"
    floor.unlink(missing_ok=True)
    floor.mkdir()
    (floor / "keep").write_text("x")  # a non-empty directory: no rename can replace it
    with pytest.raises(SealingError, match="cannot be written") as err:
        _sealer(inst, tmp_path, at=t0 + 60).make_order(ITEMS)
    assert "nothing was sealed" in err.value.message
    (floor / "keep").unlink()
    floor.rmdir()
    assert _sealer(inst, tmp_path, at=t0 + 120).make_order(ITEMS).sealed_here
    assert floor.is_file()


def test_trusted_time_is_written_when_it_moves_not_for_every_sealed_code(
    inst: LocalInstitution, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 codes sealed 15 s apart (15 minutes): before, every code rewrote ``trusted-time``
    (atomic replace + fsync, 60 writes) because the clock moved. Now only when the device
    mark moved by more than DEVICE_STEP (the signed mark does not move here): 4 writes, the
    kept mark never more than DEVICE_STEP behind the clock. The clock set back an hour
    (further than DEVICE_STEP) after the list went stale is still refused."""
    from safescan.code import timefloor

    t0 = inst.now
    _ready(inst, tmp_path, FakeApi(inst, crl=_v3(inst, sequence=3, issued_at=t0)))
    floor = tmp_path / "pos-seal" / "trusted-time"
    written: list[bytes] = []
    real = timefloor.write_atomic

    def counting(path: Path, data: bytes, *args: Any, **kwargs: Any) -> None:
        written.append(data)
        real(path, data, *args, **kwargs)

    monkeypatch.setattr(timefloor, "write_atomic", counting)
    clock = [t0]
    sealer = LocalSealer(  # one terminal process: the sealed key is decrypted once
        tmp_path / "pos-seal",
        merchant_id=DEFAULT_MERCHANT.id,
        trust=inst.trust,
        passphrase=PASS,
        clock=lambda: clock[0],
    )
    for i in range(60):
        clock[0] = now = t0 + 15 * (i + 1)
        assert sealer.make_order(ITEMS).sealed_here
        kept = timefloor.TimeFloor.from_bytes(floor.read_bytes())
        assert 0 <= now - kept.device <= timefloor.DEVICE_STEP and kept.signed == t0
    assert len(written) == 4
    stale = t0 + DAY + STALE_GRACE + 3600
    with pytest.raises(SealingListStale):
        _sealer(inst, tmp_path, at=stale).make_order(ITEMS)
    with pytest.raises(SealingListStale, match="a clock set back"):
        _sealer(inst, tmp_path, at=stale - 3600).make_order(ITEMS)


def test_an_expired_certificate_does_not_seal_with_the_clock_set_back(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """Attack: the terminal's code-signing certificate is valid for a day; two days later the
    terminal (offline) refuses to seal with it; its clock is then set back to an hour after
    set-up, when the certificate was valid. Before: the certificate was judged by the clock
    alone and the terminal sealed codes under an expired certificate. Now it is judged at the
    trusted time (``trusted-time``): the typed ``certificate_expired``, nothing sealed. A
    clock set back so far that a code it stamps would already be expired at a time the
    institution signed is ``pos_clock_behind``; a device mark left by a clock once ahead does
    not stop sealing (the customer's side judges expiry)."""
    t0 = inst.now

    def terminal(base: Path, api: FakeApi) -> tuple[LocalSealer, list[int]]:
        """One terminal whose clock the test moves (its key decrypted once: cheap)."""
        clock = [t0]
        sealer = LocalSealer(
            base / "pos-seal",
            merchant_id=DEFAULT_MERCHANT.id,
            trust=inst.trust,
            passphrase=PASS,
            clock=lambda: clock[0],
        )
        sealer.setup(api)  # type: ignore[arg-type]
        return sealer, clock

    sealer, clock = terminal(tmp_path, FakeApi(inst, valid_days=1))
    clock[0] = t0 + 3600
    assert sealer.make_order(ITEMS).sealed_here
    clock[0] = t0 + 2 * DAY
    with pytest.raises(CertificateExpired):
        sealer.make_order(ITEMS)
    clock[0] = t0 + 3600  # the clock set back
    with pytest.raises(CertificateExpired):
        sealer.make_order(ITEMS)

    # a valid certificate: a clock once two hours ahead, set right, still seals; a clock
    # 400 s behind the list's signed issue (within the tolerance) would stamp a code (valid
    # 300 s) already expired at that signed time
    sealer, clock = terminal(tmp_path / "other", FakeApi(inst))
    clock[0] = t0 + 2 * 3600
    assert sealer.make_order(ITEMS).sealed_here
    clock[0] = t0 + 60
    assert sealer.make_order(ITEMS).sealed_here
    clock[0] = t0 - 400
    with pytest.raises(SealingClockBehind) as behind:
        sealer.make_order(ITEMS)
    assert "would already be expired" in behind.value.message


def _v2(inst: LocalInstitution, *, sequence: int, issued_at: int) -> bytes:
    """A genuine version-2 list (no next_update: nothing bounds how old it may be)."""
    return RevocationList.issue(
        inst.key, inst.kid, sequence=sequence, issued_at=issued_at, serials=set()
    ).to_bytes()


def _keys_list(inst: LocalInstitution, issued_at: int) -> bytes:
    return SchemeKeyList.issue(
        inst.key,
        inst.kid,
        issued_at=issued_at,
        current_kid=inst.scheme.kid,
        keys=[PublishedSchemeKey(inst.scheme.public, None)],
    ).to_bytes()


@pytest.mark.parametrize(
    "swap", ["revocations_v2", "revocations_v3", "revocations_removed", "scheme_keys"]
)
def test_an_older_genuine_list_swapped_in_or_answered_again_does_not_seal(
    inst: LocalInstitution, tmp_path: Path, swap: str
) -> None:
    """Threat-model K15 at the terminal, across processes: set up at t0, refreshed at
    t0 + 13 h (a newer revocation list and scheme key list kept). Attack: the list of t0
    (genuine, signed) is copied back into the cache, or the revocation list removed; then the
    institution (stale, malicious, or a proxy's old copy) answers that old list too. Before:
    the terminal sealed with it (version 2: however old; version 3: within its window; none:
    nothing revoked; an old scheme key list: keys since retired), and the refresh kept it.
    Now ``pos_list_rolled_back`` both times, nothing cached; the current answer repairs it."""
    t0 = inst.now
    later = t0 + 13 * 3600
    make = _v3 if swap == "revocations_v3" else _v2
    old_crl, new_crl = make(inst, sequence=3, issued_at=t0), make(inst, sequence=3, issued_at=later)
    old_keys, new_keys = _keys_list(inst, t0), _keys_list(inst, later)
    api = FakeApi(inst, crl=old_crl, keys_list=old_keys)
    # one terminal whose clock the test moves (its key decrypted once: cheap); nothing of
    # the lists is held in memory, each use reads the cache as a new process would
    clock = [t0]
    sealer = _sealer(inst, tmp_path, at=None, clock=clock)
    sealer.setup(api)  # type: ignore[arg-type]
    base = tmp_path / "pos-seal"
    api.crl, api.keys_list = new_crl, new_keys
    clock[0] = later + 60
    sealer.refresh(api)  # type: ignore[arg-type]
    assert sealer.make_order(ITEMS).sealed_here
    if swap == "scheme_keys":
        (base / "scheme-keys.cbor").write_bytes(old_keys)
        api.keys_list = old_keys
    elif swap == "revocations_removed":
        (base / "revocations.cbor").unlink()
        api.crl = old_crl
    else:
        (base / "revocations.cbor").write_bytes(old_crl)
        api.crl = old_crl
    with pytest.raises(SealingListRolledBack) as err:
        clock[0] = later + 120
        sealer.make_order(ITEMS)  # offline
    assert err.value.code == "pos_list_rolled_back"
    cached = {name: (base / name).read_bytes() for name in ("scheme-keys.cbor", "checked_at")}
    with pytest.raises(SealingListRolledBack):
        clock[0] = later + 180
        sealer.refresh(api)  # type: ignore[arg-type]
    assert cached == {name: (base / name).read_bytes() for name in cached}
    # the institution's current lists repair it
    api.crl, api.keys_list = new_crl, new_keys
    clock[0] = later + 240
    sealer.refresh(api)  # type: ignore[arg-type]
    assert sealer.make_order(ITEMS).sealed_here


def test_the_marks_are_kept_per_list_so_a_newer_scheme_key_list_refuses_nothing(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """The scheme key list is signed at every ``GET /v1/keys`` (nearly always later than the
    revocation list): one mark for both would refuse the current revocation list. A terminal
    set up before the marks existed (no ``newest-lists``) starts keeping them at its next
    code."""
    t0 = inst.now
    api = FakeApi(
        inst, crl=_v2(inst, sequence=1, issued_at=t0 - DAY), keys_list=_keys_list(inst, t0)
    )
    sealer = _ready(inst, tmp_path, api)
    assert sealer.make_order(ITEMS).sealed_here
    marks = tmp_path / "pos-seal" / "newest-lists"
    assert marks.read_bytes() == b'{"revocations": %d, "scheme_keys": %d}\n' % (t0 - DAY, t0)
    marks.unlink()
    assert sealer.make_order(ITEMS).sealed_here
    assert marks.exists()


def test_the_certificate_is_renewed_a_week_before_its_end_at_the_trusted_time(
    inst: LocalInstitution, tmp_path: Path
) -> None:
    """Refresh judges the certificate at the trusted time, as sealing does (threat-model
    K15b). The terminal's clock read t0 + 3 days (it sealed then: kept in ``trusted-time``),
    then was set back to t0; its certificate ends at t0 + 9 days: 6 days left at the trusted
    time, 9 by the clock. Before: judged by the clock, not renewed (sealing, judged at the
    trusted time, would refuse it as expired days before the clock thought renewal due). Now
    renewed at the refresh."""
    t0 = inst.now
    api = FakeApi(inst, valid_days=9)
    clock = [t0]
    sealer = _sealer(inst, tmp_path, at=None, clock=clock)
    sealer.setup(api)  # type: ignore[arg-type]
    assert len(api.issued) == 1
    clock[0] = t0 + 3 * DAY
    assert sealer.make_order(ITEMS).sealed_here
    clock[0] = t0 + 60  # set back
    sealer.refresh(api)  # type: ignore[arg-type]
    assert len(api.issued) == 2
