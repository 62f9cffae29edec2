"""Attacks on the API's input checks (issue #13 items 3, 7, 10, 11; #11 money fields).

Each attack goes to a real ``safescan institution serve`` on 127.0.0.1 (SQLite and
PostgreSQL) and must get a typed 4xx answer **and** change nothing: the whole database is
snapshotted before and compared after (``tests/institution/snapshot.py``).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.api.merchant_auth import sign_request
from safescan.carrier.testing import software_attestation
from safescan.code import SigningKey
from safescan.code.attestation import enrollment_challenge
from safescan.code.errors import SafescanError
from safescan.code.pubkeys import ED25519_SMALL_ORDER, X25519_SMALL_ORDER, P
from tests.institution.harness import MerchantClient, World, b64
from tests.institution.snapshot import diff, snapshot

# --- payloads -------------------------------------------------------------------------------

#: JSON texts that are not JSON integers, though lax parsers make numbers of them.
NOT_INTEGERS = ["true", "false", '"150"', '"1_0"', '" 5"', "1.0", "1e2", "150.5", "-0.0", "null"]
#: Characters no stored text may hold: C0, DEL, C1, bidi, zero-width, BOM, separators, fillers.
CONTROL_CHARS = [
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",  # C1 NEXT LINE
    "\x9b",  # C1 CONTROL SEQUENCE INTRODUCER
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u061c",  # ARABIC LETTER MARK
    "\u200b",  # ZERO WIDTH SPACE
    "\u200d",  # ZERO WIDTH JOINER
    "\ufeff",  # BOM
    "\u00ad",  # SOFT HYPHEN
    "\u2028",  # LINE SEPARATOR
    "\u3164",  # HANGUL FILLER
    "\ue000",  # private use
    "\U000e0041",  # TAG LATIN CAPITAL LETTER A
]


def weak_ed25519_keys() -> list[bytes]:
    """Every small-order encoding, non-canonical y values, and points off the curve."""
    noncanonical = [(P + k).to_bytes(32, "little") for k in range(2, 19)]
    off_curve = [y.to_bytes(32, "little") for y in _off_curve_ys(3)]
    return sorted(ED25519_SMALL_ORDER) + noncanonical + off_curve


def _off_curve_ys(n: int) -> list[int]:
    """The first ``n`` y for which RFC 8032's x^2 = (y^2 - 1) / (d y^2 + 1) is no square."""
    d = (-121665 * pow(121666, -1, P)) % P
    found = []
    for y in range(2, 1000):
        x2 = (y * y - 1) * pow(d * y * y + 1, -1, P) % P
        if pow(x2, (P - 1) // 2, P) == P - 1:
            found.append(y)
        if len(found) == n:
            break
    return found


def weak_x25519_keys() -> list[bytes]:
    """Every small-order u, non-canonical u (>= p) and top-bit-set encodings."""
    good = X25519PrivateKey.generate().public_key().public_bytes_raw()
    top = good[:31] + bytes([good[31] | 0x80])
    return [*sorted(X25519_SMALL_ORDER), (P + 2).to_bytes(32, "little"), top]


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(world: World) -> MerchantClient:
    return world.merchant("Hardening Shop")


@pytest.fixture
def unchanged(world: World) -> Iterator[None]:
    """The test's requests must leave every table as it was."""
    url = world.db_url  # type: ignore[attr-defined]
    before = snapshot(url)
    yield
    assert diff(before, snapshot(url)) == {}


def raw_admin(world: World, path: str, body: str) -> Any:
    return world.http.post(
        path,
        content=body.encode(),
        headers={
            "Authorization": f"Bearer {world.admin_token}",
            "Content-Type": "application/json",
        },
    )


def raw_merchant(m: MerchantClient, method: str, path: str, body: str) -> Any:
    raw = body.encode()
    h = sign_request(m.key, m.merchant_id, method, path, raw)
    h["Content-Type"] = "application/json"
    return m.http.request(method, path, content=raw, headers=h)


def assert_refused(r: Any, param: str | None = None, *, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] and err["code"] and err["message"]
    if param is not None:
        assert err.get("param") == param, err
    return dict(err)


def paid_order(world: World, shop: MerchantClient, total: int = 900) -> str:
    cid = world.customer({"EUR": 5_000})
    carrier = world.carrier(cid)
    order = shop.order([("Tea", 1, total)])
    r = world.pay(order["code"], carrier.authorize(order["code"]))
    assert r.status_code == 201, r.text
    return str(order["order_id"])


# --- 11: JSON integers only -----------------------------------------------------------------


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_money_and_quantities_must_be_json_integers(
    world: World, shop: MerchantClient, value: str
) -> None:
    cid = world.customer()
    order_id = paid_order(world, shop)
    before = snapshot(world.db_url)  # type: ignore[attr-defined]
    # funding (admin)
    r = raw_admin(
        world, f"/v1/admin/customers/{cid}/fund", f'{{"currency": "EUR", "amount": {value}}}'
    )
    err = assert_refused(r, "amount")
    if value != "null":
        assert "JSON integer" in err["message"]
    # order lines: quantity and unit price
    for field, other in (("quantity", '"unit_price": 100'), ("unit_price", '"quantity": 1')):
        body = f'{{"currency": "EUR", "items": [{{"name": "Tea", {other}, "{field}": {value}}}]}}'
        assert_refused(raw_merchant(shop, "POST", "/v1/merchant/orders", body), f"items.0.{field}")
    # refunds
    r = raw_merchant(
        shop, "POST", f"/v1/merchant/orders/{order_id}/refunds", f'{{"amount": {value}}}'
    )
    if value == "null":  # null is "no amount": a full refund, allowed
        assert r.status_code == 201, r.text
        return
    assert_refused(r, "amount")
    # other whole numbers: merchant category code, certificate and token validity, expiry
    key = b64(SigningKey.generate().public_key.raw)
    merchant = {
        "name": "Int Shop",
        "city": "Lyon",
        "country": "FR",
        "settlement_account": "FR76",
        "mcc": "MCC",
    }
    r = raw_admin(world, "/v1/admin/merchants", json.dumps(merchant).replace('"MCC"', value))
    assert_refused(r, "mcc")
    body = f'{{"public_key": "{key}", "valid_days": {value}}}'
    assert_refused(raw_merchant(shop, "POST", "/v1/merchant/certificates", body), "valid_days")
    r = raw_admin(
        world, f"/v1/admin/customers/{cid}/enrollment-tokens", f'{{"ttl_seconds": {value}}}'
    )
    assert_refused(r, "ttl_seconds")
    line = '{"name": "T", "quantity": 1, "unit_price": 5}'
    body = f'{{"currency": "EUR", "items": [{line}], "expires_in": {value}}}'
    assert_refused(raw_merchant(shop, "POST", "/v1/merchant/orders", body), "expires_in")
    assert diff(before, snapshot(world.db_url)) == {}  # type: ignore[attr-defined]


def test_integers_are_still_accepted_and_out_of_range_refused(
    world: World, shop: MerchantClient
) -> None:
    cid = world.customer()
    before = snapshot(world.db_url)  # type: ignore[attr-defined]
    for bad in ("0", "-5", "1000000000000", "123456789012345678901234567890"):
        r = raw_admin(
            world, f"/v1/admin/customers/{cid}/fund", f'{{"currency":"EUR","amount":{bad}}}'
        )
        assert_refused(r, "amount")
    assert diff(before, snapshot(world.db_url)) == {}  # type: ignore[attr-defined]
    r = raw_admin(world, f"/v1/admin/customers/{cid}/fund", '{"currency":"EUR","amount":150}')
    assert r.status_code == 200
    assert r.json()["balances"] == [{"currency": "EUR", "amount": 150}]


# --- 10: control characters in every stored text -------------------------------------------


def _text_attacks(world: World, shop: MerchantClient, order_id: str, bad: str) -> None:
    merchant = {
        "name": "Shop",
        "city": "Lyon",
        "country": "FR",
        "mcc": 5814,
        "settlement_account": "FR7630006000011234567890189",
    }
    for field in ("name", "city", "settlement_account"):
        for text in (f"Shop{bad}", f"{bad}Shop", f"Sh{bad}op"):
            r = world.admin("POST", "/v1/admin/merchants", {**merchant, field: text})
            assert_refused(r, field)
    r = world.admin("POST", "/v1/admin/customers", {"name": f"Alice{bad} Martin"})
    assert_refused(r, "name")
    r = shop.request(
        "POST",
        "/v1/merchant/orders",
        {
            "currency": "EUR",
            "items": [{"name": "Tea", "quantity": 1, "unit_price": 5}],
            "reference": f"ref{bad}42",
        },
    )
    assert_refused(r, "reference")
    r = shop.request(
        "POST",
        "/v1/merchant/orders",
        {"currency": "EUR", "items": [{"name": f"Te{bad}a", "quantity": 1, "unit_price": 5}]},
    )
    assert_refused(r, "items.0.name")
    r = shop.request(
        "POST", f"/v1/merchant/orders/{order_id}/refunds", {"amount": 1, "reason": f"x{bad}y"}
    )
    assert_refused(r, "reason")


def test_control_bidi_and_invisible_characters_are_refused_in_every_stored_text(
    world: World, shop: MerchantClient
) -> None:
    order_id = paid_order(world, shop)
    before = snapshot(world.db_url)  # type: ignore[attr-defined]
    for bad in CONTROL_CHARS:
        _text_attacks(world, shop, order_id, bad)
    assert diff(before, snapshot(world.db_url)) == {}  # type: ignore[attr-defined]
    # the same texts without the character are fine (the refusal is about the character)
    r = world.admin("POST", "/v1/admin/customers", {"name": "Alice Martin"})
    assert r.status_code == 201


# --- 7: weak public keys --------------------------------------------------------------------


def test_weak_merchant_api_and_certificate_keys_are_refused(
    world: World, shop: MerchantClient, unchanged: None
) -> None:
    for raw in weak_ed25519_keys():
        r = world.admin(
            "POST",
            "/v1/admin/merchants",
            {
                "name": "Weak Key Shop",
                "city": "Lyon",
                "country": "FR",
                "mcc": 5814,
                "settlement_account": "FR7630006000011234567890189",
                "api_public_key": b64(raw),
            },
        )
        assert_refused(r, "api_public_key")
        r = shop.request("POST", "/v1/merchant/certificates", {"public_key": raw.hex()})
        assert_refused(r, "public_key")


def test_identity_key_merchant_cannot_exist_so_trivial_signatures_never_authenticate(
    world: World, unchanged: None
) -> None:
    """The reported attack: identity point as API key, then R = identity, S = 0 verifies."""
    identity = bytes([1]) + bytes(31)
    r = world.admin(
        "POST",
        "/v1/admin/merchants",
        {
            "name": "Identity",
            "city": "Lyon",
            "country": "FR",
            "mcc": 5814,
            "settlement_account": "FR76",
            "api_public_key": b64(identity),
        },
    )
    err = assert_refused(r, "api_public_key")
    assert "small order" in err["message"]


def _enroll(world: World, token: str, signing: bytes, transport: bytes) -> Any:
    """Enroll these keys with a genuine (trusted factory's) attestation of them, so that a
    refusal is the keys' own fault; a small-order signing key cannot even be put in a
    statement, so that request goes without one (the key is checked first)."""
    body = {
        "token": token,
        "signing_public_key": b64(signing),
        "transport_public_key": b64(transport),
    }
    try:
        challenge = enrollment_challenge(token)
        statement = software_attestation(world.factory, signing, transport, challenge)
        body["attestation"] = b64(statement)
    except SafescanError:
        pass
    return world.http.post("/v1/carriers/enroll", json=body)


# --- 3 + 7: a refused enrollment changes nothing and leaves the token unspent ---------------


def test_refused_enrollments_leave_no_carrier_and_an_unspent_token(world: World) -> None:
    cid = world.customer()
    t = world.admin("POST", f"/v1/admin/customers/{cid}/enrollment-tokens", {})
    token = t.json()["token"]
    good_sign = SigningKey.generate().public_key.raw
    good_transport = X25519PrivateKey.generate().public_key().public_bytes_raw()
    before = snapshot(world.db_url)  # type: ignore[attr-defined]
    attempts: list[tuple[bytes, bytes, str]] = []
    attempts += [(k, good_transport, "signing_public_key") for k in weak_ed25519_keys()]
    attempts += [(good_sign, k, "transport_public_key") for k in weak_x25519_keys()]
    for signing, transport, param in attempts:
        assert_refused(_enroll(world, token, signing, transport), param)
    # malformed: wrong lengths, not base64, unknown fields
    bad_bodies: list[dict[str, Any]] = [
        {
            "token": token,
            "signing_public_key": b64(good_sign[:31]),
            "transport_public_key": b64(good_transport),
        },
        {
            "token": token,
            "signing_public_key": b64(good_sign),
            "transport_public_key": b64(good_transport + b"\0"),
        },
        {
            "token": token,
            "signing_public_key": "!" * 44,
            "transport_public_key": b64(good_transport),
        },
        {
            "token": token,
            "signing_public_key": b64(good_sign),
            "transport_public_key": b64(good_transport),
            "extra": 1,
        },
    ]
    for body in bad_bodies:
        r = world.http.post("/v1/carriers/enroll", json=body)
        assert 400 <= r.status_code < 500, r.text
    # unknown token
    assert_refused(
        _enroll(world, "enr_" + secrets.token_urlsafe(24), good_sign, good_transport),
        "token",
        status=401,
    )
    assert diff(before, snapshot(world.db_url)) == {}  # type: ignore[attr-defined]
    customer = world.admin("GET", f"/v1/admin/customers/{cid}").json()
    assert customer["carriers"] == []
    # the token was not spent: it enrolls a good carrier now, exactly once
    r = _enroll(world, token, good_sign, good_transport)
    assert r.status_code == 201, r.text
    assert_refused(_enroll(world, token, good_sign, good_transport), "token", status=401)
    carriers = world.admin("GET", f"/v1/admin/customers/{cid}").json()["carriers"]
    assert [c["serial"] for c in carriers] == [r.json()["carrier_serial"]]


def test_weak_keys_would_forge_signatures_without_the_check() -> None:
    """Why the check matters: for every small-order key the raw library accepts a signature
    made without any private key (R a small-order point, S = 0) for some message."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from safescan.code.errors import KeyFileError
    from safescan.code.keys import VerifyKey

    small = sorted(ED25519_SMALL_ORDER)
    for key in small:
        forged = False
        for i in range(16):
            msg = f"pay 1000000 EUR #{i}".encode()
            for r_point in small:
                try:
                    Ed25519PublicKey.from_public_bytes(key).verify(r_point + bytes(32), msg)
                except Exception:  # noqa: BLE001 - the library's own refusal
                    continue
                forged = True
                break
            if forged:
                break
        assert forged, key.hex()
        with pytest.raises(KeyFileError):
            VerifyKey(key)


def test_base64_of_keys_in_other_forms_is_refused_consistently(world: World) -> None:
    # hex and base64 of the same weak key: the same typed refusal
    key = bytes([1]) + bytes(31)
    for form in (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
        r = world.admin(
            "POST",
            "/v1/admin/merchants",
            {
                "name": "Form Shop",
                "city": "Lyon",
                "country": "FR",
                "mcc": 5814,
                "settlement_account": "FR76",
                "api_public_key": form,
            },
        )
        assert_refused(r, "api_public_key")


# --- 5: look-alike names at onboarding --------------------------------------------------------


def _onboard(world: World, name: str, **extra: Any) -> Any:
    return world.admin(
        "POST",
        "/v1/admin/merchants",
        {
            "name": name,
            "city": "Lyon",
            "country": "FR",
            "mcc": 5814,
            "settlement_account": "FR7630006000011234567890189",
            **extra,
        },
    )


LOOKALIKES = {
    "𝐏𝐚𝐲𝐏𝐚𝐥": "compat",  # mathematical bold
    "ＰａｙＰａｌ": "compat",  # fullwidth
    "ℊoogle": "compat",  # script small g
    "Ⅿicrosoft": "compat",  # Roman numeral one thousand
    "𝔄pple": "compat",  # fraktur
    "PаyPal": "lookalike",  # Cyrillic а
    "Арр1е": "lookalike",  # Cyrillic and a digit
    "PaypaI": "lookalike",  # capital I for l
    "rnicrosoft": "lookalike",  # rn for m
    "G00gle": "lookalike",
    "PAY-PAL": "lookalike",
    "Microſoft": "compat",  # long s (NFKC: s)
}


def test_lookalike_names_are_refused_at_onboarding(world: World, shop: MerchantClient) -> None:
    before = snapshot(world.db_url)  # type: ignore[attr-defined]
    for name, kind in LOOKALIKES.items():
        r = _onboard(world, name)
        if kind == "compat":
            err = assert_refused(r)
            assert "look-alike forms of letters" in err["message"], err
        else:
            err = assert_refused(r, "name", status=409)
            assert err["code"] == "lookalike_name"
        # the administrator's "this is the brand owner" flag does not let a look-alike through
        assert _onboard(world, name, allow_protected_name=True).status_code in (400, 409)
    # another merchant's name, imitated
    for fake in ("Hardening Sh0p", "HARDENING SHOP", "Hardening-Shop", "Ηardening Shop"):
        assert_refused(_onboard(world, fake), "name", status=409)
    # look-alike city
    r = world.admin(
        "POST",
        "/v1/admin/merchants",
        {
            "name": "Plain",
            "city": "Ｐaris",
            "country": "FR",
            "mcc": 5814,
            "settlement_account": "FR76",
        },
    )
    assert_refused(r)
    # a protected name itself: only with the flag
    assert_refused(_onboard(world, "Google"), "name", status=409)
    assert diff(before, snapshot(world.db_url)) == {}  # type: ignore[attr-defined]
    assert _onboard(world, "Google", allow_protected_name=True).status_code == 201
    # the same name twice is not a look-alike (two cafés may share a name)
    assert _onboard(world, "Hardening Shop").status_code == 201
