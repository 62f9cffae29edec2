"""Revocation lists cannot be inflated past what a card holds (issue #13 item 8).

Against a real server (SQLite and PostgreSQL): what one merchant can add is bounded (live
code-signing certificates, their validity); a revoked merchant is one entry however many
certificates it had; the card's list (``scope=merchant``) never carries other parties'
revocations; and a list that does not fit is never taken as "unchecked": the wallet refuses
merchant-signed codes (the card's own refusal is in ``tests/carrier/test_commands.py``).
"""

from __future__ import annotations

import base64
from typing import Any

from safescan.carrier import rom
from safescan.code import SigningKey
from safescan.code.certs import RevocationList, TrustStore
from safescan.code.keys import VerifyKey
from safescan.wallet.revocations import update_card
from tests.institution.harness import World, b64
from tests.institution.snapshot import diff, snapshot


def _trust(world: World) -> TrustStore:
    doc = world.http.get("/v1/keys").json()
    return TrustStore(
        {int(k["kid"]): VerifyKey(base64.b64decode(k["public_key"])) for k in doc["root_keys"]}
    )


def _list(world: World, trust: TrustStore, scope: str) -> RevocationList:
    raw = world.http.get(f"/v1/revocation-list?format=cbor&scope={scope}").content
    return RevocationList.from_bytes(raw, trust)


def _certify(m: Any, days: int = 30) -> Any:
    return m.request(
        "POST",
        "/v1/merchant/certificates",
        {"public_key": b64(SigningKey.generate().public_key.raw), "valid_days": days},
    )


def test_one_merchant_adds_a_bounded_number_of_entries(world: World) -> None:
    m = world.merchant("Cert Hoarder")
    for _ in range(4):
        assert _certify(m).status_code == 201
    url = world.db_url  # type: ignore[attr-defined]
    before = snapshot(url)
    for attempt in range(5):
        r = _certify(m)
        assert r.status_code == 409 and r.json()["error"]["code"] == "certificate_limit", attempt
    for days in (367, 3660, 10_000):
        r = _certify(m, days)
        assert r.status_code == 400 and r.json()["error"]["param"] == "valid_days"
    assert diff(before, snapshot(url)) == {}
    # revoked as a whole: one entry, in both lists, whatever it held
    trust = _trust(world)
    r = world.admin("POST", f"/v1/admin/merchants/{m.merchant_id}/revoke", {})
    assert r.status_code == 200, r.text
    full, card = _list(world, trust, "all"), _list(world, trust, "merchant")
    assert m.merchant_id in full.subjects and m.merchant_id in card.subjects
    certs = r.json()
    assert certs["status"] == "revoked"
    assert full.sequence == card.sequence
    doc = world.http.get("/v1/revocation-list").json()
    assert m.merchant_id in doc["subjects"]


def test_other_parties_revocations_never_reach_the_card_list(world: World) -> None:
    trust = _trust(world)
    before = _list(world, trust, "merchant")
    cid = world.customer()
    serials = []
    for _ in range(6):  # a customer loses carrier after carrier
        carrier = world.carrier(cid)
        r = world.admin("POST", f"/v1/admin/carriers/{carrier.serial}/revoke", {})
        assert r.status_code == 200
        serials.append(carrier.serial)
    full, card = _list(world, trust, "all"), _list(world, trust, "merchant")
    assert set(serials) <= full.serials
    assert not set(serials) & card.serials
    assert card.entries == before.entries  # the card list did not grow
    assert card.sequence > before.sequence  # but it is newer, so cards can follow it
    assert len(card.to_bytes()) < rom.MAX_COMMAND_DATA


class _Revocations:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def signed(self, scope: str = "all") -> bytes:
        assert scope == "merchant"  # the card gets the merchant-scoped list only
        return self.raw


class _Remote:
    """The wallet client's ``revocations`` service, answering one list."""

    def __init__(self, raw: bytes) -> None:
        self.revocations = _Revocations(raw)


class _Card:
    def __init__(self) -> None:
        self.taken: list[bytes] = []

    def update_revocations(self, raw: bytes) -> int:
        self.taken.append(raw)
        return 1

    def close(self) -> None:
        return


def test_a_list_the_card_cannot_keep_makes_the_wallet_fail_closed() -> None:
    root = SigningKey.generate()
    trust = TrustStore({1: root.public_key})
    trust.crl_sequence = 5

    def crl(n: int, seq: int = 5) -> bytes:
        return RevocationList.issue(
            root, 1, sequence=seq, issued_at=0, serials=set(range(1, n + 1))
        ).to_bytes()

    fits = _Card()
    out = update_card(_Remote(crl(10)), trust, fits, card_sequence=4)  # type: ignore[arg-type]
    assert not out.stale and fits.taken
    for raw in (crl(rom.MAX_REVOKED_SERIALS + 1), crl(3000)):
        card = _Card()
        out = update_card(_Remote(raw), trust, card, card_sequence=4)  # type: ignore[arg-type]
        assert out.stale and not card.taken and "refused" in out.notices[0]
    # a forged list is no excuse either: the card stays behind, so merchant codes are refused
    forged = RevocationList.issue(
        SigningKey.generate(), 1, sequence=5, issued_at=0, serials=set()
    ).to_bytes()
    out = update_card(_Remote(forged), trust, _Card(), card_sequence=4)  # type: ignore[arg-type]
    assert out.stale
    # a card already up to date is left alone
    out = update_card(_Remote(crl(3000)), trust, _Card(), card_sequence=5)  # type: ignore[arg-type]
    assert not out.stale


def test_the_card_bound_is_entries_and_bytes_and_beyond_either_it_fails_closed() -> None:
    """1,024 serials fit one UPDATE REVOCATIONS command; 1,024 merchant ids (the institution's
    ten-character ids) do not: the wallet then treats the card as behind, never as checked."""
    root = SigningKey.generate()
    trust = TrustStore({1: root.public_key})
    trust.crl_sequence = 9
    n = rom.MAX_REVOKED_SERIALS
    serials = RevocationList.issue(
        root, 1, sequence=9, issued_at=2**31, serials=set(range(2**30, 2**30 + n))
    ).to_bytes()
    assert len(serials) <= rom.MAX_COMMAND_DATA
    card = _Card()
    assert not update_card(_Remote(serials), trust, card, card_sequence=1).stale  # type: ignore[arg-type]
    merchants = RevocationList.issue(
        root,
        1,
        sequence=9,
        issued_at=2**31,
        serials=set(),
        subjects={f"M{i:09d}" for i in range(n)},
    ).to_bytes()
    assert len(merchants) > rom.MAX_COMMAND_DATA
    card = _Card()
    out = update_card(_Remote(merchants), trust, card, card_sequence=1)  # type: ignore[arg-type]
    assert out.stale and not card.taken


def test_the_json_list_shows_what_the_signed_one_says_including_next_update(
    world: World,
) -> None:
    """``GET /v1/revocation-list``'s JSON shows the signed list's ``issued_at`` and
    ``next_update`` (before: only the signed bytes carried ``next_update``, so a JSON reader
    could not tell until when the list is current), and the spec names the field."""
    trust = _trust(world)
    for scope in ("all", "merchant"):
        doc = world.http.get(f"/v1/revocation-list?scope={scope}").json()
        signed = RevocationList.from_bytes(base64.b64decode(doc["signed"]), trust)
        assert doc["sequence"] == signed.sequence
        assert doc["issued_at"] == signed.issued_at
        assert doc["next_update"] == signed.next_update
    full = world.http.get("/v1/revocation-list").json()
    assert full["issued_at"] < full["next_update"]  # scope=all is a version-3 list
    spec = world.http.get("/openapi.json").json()
    json_form = spec["paths"]["/v1/revocation-list"]["get"]["responses"]["200"]["content"]
    schema = json_form["application/json"]["schema"]
    assert "next_update" in schema["required"]
    assert schema["properties"]["next_update"]["type"] == ["integer", "null"]
