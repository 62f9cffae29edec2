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

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from safescan.carrier.client import CarrierClient
from safescan.client.errors import InstitutionUnreachable
from safescan.client.wallet import WalletClient
from safescan.code.certs import RevocationList, TrustStore
from safescan.code.keys import SigningKey
from safescan.wallet.errors import RevocationListInvalid
from safescan.wallet.flow import Wallet
from safescan.wallet.revocations import update_card
from safescan.wallet.store import WalletConfig

ROOT = SigningKey.from_seed(b"\x31" * 32)
OTHER = SigningKey.from_seed(b"\x32" * 32)
REVOKED = 4242


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
