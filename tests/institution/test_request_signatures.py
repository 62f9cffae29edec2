"""Merchant request signatures (RFC 9421 HTTP Message Signatures, RFC 9530 Content-Digest),
attacked: in-process against :func:`safescan.api.merchant_auth.verify_request` in many
variations, and against a real server (SQLite and PostgreSQL) where a refused request must
change nothing. A request signed by the library itself (its own ``ed25519`` algorithm over a
``cryptography`` key, an ``httpx`` request: what any RFC 9421 implementation sends) is accepted,
so the format is the standard's, not ours.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from safescan.api.errors import InvalidRequest, ReplayedRequest, Unauthenticated
from safescan.api.merchant_auth import TAG, TOLERANCE, sign_request, verify_request
from safescan.code.keys import SigningKey, VerifyKey
from tests.institution.harness import MerchantClient, World

NOW = 1_800_000_000
PATH = "/v1/merchant/orders?limit=5"
BODY = b'{"items":[{"name":"Tea","quantity":1,"unit_price":250}],"currency":"EUR"}'


def _keys() -> tuple[SigningKey, dict[str, VerifyKey]]:
    key = SigningKey.generate()
    return key, {"M1": key.public_key, "M2": SigningKey.generate().public_key}


def _verify(
    headers: dict[str, str],
    keys: dict[str, VerifyKey],
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    now: int = NOW,
) -> Any:
    return verify_request(method, path, headers, body, keys.get, now=now)


def _library_signed(
    seed: bytes,
    key_id: str,
    method: str,
    url: str,
    body: bytes,
    *,
    components: tuple[str, ...] = ("@method", "@path", "@query", "content-digest"),
    created: int | None = None,
    expires: int | None = None,
    nonce: str | None = "n" * 8 + secrets.token_hex(8),
    tag: str | None = TAG,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Headers made by http-message-signatures' own ed25519 over an httpx request (no safescan
    code): Content-Digest, Signature-Input, Signature."""
    request = httpx.Request(method, url, content=body, headers=extra or {})
    private = Ed25519PrivateKey.from_private_bytes(seed)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: private}),
    )
    signer.sign(
        request,
        key_id=key_id,
        created=dt.datetime.fromtimestamp(created or int(time.time()), tz=dt.UTC),
        expires=dt.datetime.fromtimestamp(expires, tz=dt.UTC) if expires else None,
        nonce=nonce,
        tag=tag,
        covered_component_ids=components,
        body=body,
    )
    return {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "host")}


def test_signed_request_verifies_and_names_its_merchant() -> None:
    key, keys = _keys()
    h = sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW, nonce="n" * 16)
    assert set(h) == {"Content-Digest", "Signature-Input", "Signature"}
    assert h["Content-Digest"].startswith("sha-256=:")
    assert 'tag="safescan-merchant"' in h["Signature-Input"]
    assert 'alg="ed25519"' in h["Signature-Input"] and 'keyid="M1"' in h["Signature-Input"]
    signed = _verify(h, keys)
    assert (signed.merchant_id, signed.created, signed.nonce) == ("M1", NOW, "n" * 16)
    # an empty body has its digest too (sha-256 of nothing), and GET verifies the same way
    h = sign_request(key, "M1", "GET", "/v1/merchant", timestamp=NOW)
    assert _verify(h, keys, method="GET", path="/v1/merchant", body=b"").merchant_id == "M1"


def test_the_library_alone_makes_signatures_the_institution_accepts() -> None:
    seed = secrets.token_bytes(32)
    keys = {"M1": SigningKey.from_seed(seed).public_key}
    h = _library_signed(seed, "M1", "POST", "https://shop.example" + PATH, BODY, created=NOW)
    assert _verify(h, keys).merchant_id == "M1"
    h = _library_signed(
        seed, "M1", "POST", "https://other.example" + PATH, BODY, created=NOW,
        components=("@method", "@path", "@query", "content-digest", "idempotency-key"),
        extra={"Idempotency-Key": "k-1"},
    )  # fmt: skip
    assert _verify(h, keys).merchant_id == "M1"


def _tamper_cases(key: SigningKey) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(what, headers, how the request is sent instead)"""
    good = sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW)
    other_digest = sign_request(key, "M1", "POST", PATH, BODY + b" ", timestamp=NOW)
    return [
        ("body tampered", good, {"body": BODY.replace(b"250", b"1")}),
        ("body appended", good, {"body": BODY + b" "}),
        ("body emptied", good, {"body": b""}),
        (
            "body tampered with its own digest",
            {**good, "Content-Digest": other_digest["Content-Digest"]},
            {"body": BODY + b" "},
        ),
        ("digest header stripped", {k: v for k, v in good.items() if k != "Content-Digest"}, {}),
        ("Signature stripped", {k: v for k, v in good.items() if k != "Signature"}, {}),
        ("Signature-Input stripped", {k: v for k, v in good.items() if k != "Signature-Input"}, {}),
        ("all stripped", {}, {}),
        ("other method", good, {"method": "PUT"}),
        ("other path", good, {"path": "/v1/merchant/static-codes?limit=5"}),
        ("other query", good, {"path": "/v1/merchant/orders?limit=6"}),
        ("query dropped", good, {"path": "/v1/merchant/orders"}),
        ("query added", sign_request(key, "M1", "GET", "/v1/merchant", timestamp=NOW),
         {"method": "GET", "path": "/v1/merchant?x=1", "body": b""}),
        ("signature of another key", sign_request(SigningKey.generate(), "M1", "POST", PATH, BODY,
                                                   timestamp=NOW), {}),
        ("keyid swapped to another merchant",
         {**good, "Signature-Input": good["Signature-Input"].replace('keyid="M1"', 'keyid="M2"')},
         {}),
        ("created edited", {**good, "Signature-Input": good["Signature-Input"].replace(
            f"created={NOW}", f"created={NOW + 1}")}, {}),
        ("nonce edited", {**good, "Signature-Input": good["Signature-Input"].replace(
            'nonce="', 'nonce="x')}, {}),
        ("signature bytes flipped", {**good, "Signature": good["Signature"][:-4] + "AAA=:"}, {}),
        ("signature not base64", {**good, "Signature": "sig1=:@@@@:"}, {}),
        ("Signature-Input garbage", {**good, "Signature-Input": "sig1=nonsense(("}, {}),
        ("label mismatch", {**good, "Signature": good["Signature"].replace("sig1=", "sig2=")}, {}),
        ("unknown merchant", sign_request(key, "M9", "POST", PATH, BODY, timestamp=NOW), {}),
        ("malformed merchant id", sign_request(key, "M 1/..", "POST", PATH, BODY, timestamp=NOW),
         {}),
        ("old Safescan-Signature scheme", {
            "Safescan-Merchant": "M1", "Safescan-Timestamp": str(NOW),
            "Safescan-Nonce": "n" * 16, "Safescan-Signature": base64.b64encode(b"x" * 64).decode(),
        }, {}),
    ]  # fmt: skip


def test_tampered_stripped_and_redirected_signatures_are_refused() -> None:
    key, keys = _keys()
    cases = _tamper_cases(key)
    assert len(cases) >= 20
    for what, headers, sent in cases:
        with pytest.raises(Unauthenticated) as err:
            _verify(headers, keys, **sent)
        assert not isinstance(err.value, ReplayedRequest), what


def test_idempotency_key_added_removed_or_changed_is_refused() -> None:
    key, keys = _keys()
    with_key = sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW, idempotency_key="k-1")
    without = sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW)
    assert _verify(with_key, keys).merchant_id == "M1"
    for headers in (
        {**with_key, "Idempotency-Key": "k-2"},  # changed
        {k: v for k, v in with_key.items() if k != "Idempotency-Key"},  # removed
        {**without, "Idempotency-Key": "k-1"},  # added
    ):
        with pytest.raises(Unauthenticated):
            _verify(headers, keys)
    with pytest.raises(InvalidRequest):
        _verify({**with_key, "Idempotency-Key": "bad key"}, keys)


def test_expired_and_ill_timed_signatures_are_refused() -> None:
    key, keys = _keys()
    seed = secrets.token_bytes(32)
    keys["M3"] = SigningKey.from_seed(seed).public_key
    url = "https://x.example" + PATH
    for headers, now in (
        (sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW - TOLERANCE - 1), NOW),
        (sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW + TOLERANCE + 1), NOW),
        (sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW), NOW + 3600),
        (_library_signed(seed, "M3", "POST", url, BODY, created=NOW - 10, expires=NOW - 1), NOW),
    ):
        with pytest.raises(ReplayedRequest):
            _verify(headers, keys, now=now)
    # the edges of the window are accepted
    for ts in (NOW - TOLERANCE, NOW + TOLERANCE):
        assert _verify(sign_request(key, "M1", "POST", PATH, BODY, timestamp=ts), keys)


def test_signatures_that_cover_too_little_are_refused() -> None:
    seed = secrets.token_bytes(32)
    keys = {"M1": SigningKey.from_seed(seed).public_key}
    url = "https://x.example" + PATH
    sign: Callable[..., dict[str, str]] = lambda **kw: _library_signed(  # noqa: E731
        seed, "M1", "POST", url, BODY, created=NOW, **kw
    )
    for headers in (
        sign(components=("@method", "@path", "content-digest")),  # no query
        sign(components=("@method", "@target-uri", "content-digest")),  # no @path/@query
        sign(components=("@path", "@query", "content-digest")),  # no method
        sign(components=("@method", "@query", "content-digest")),  # no path
        sign(tag=None),  # not tagged for safescan
        sign(tag="another-app"),
        sign(nonce=None),  # no nonce: could not be told from a replay
        sign(nonce="short"),
    ):
        with pytest.raises(Unauthenticated):
            _verify(headers, keys)
    assert _verify(sign(), keys).merchant_id == "M1"  # the same signer, covering enough


def _respelt(key: SigningKey) -> list[tuple[str, dict[str, str]]]:
    """A genuine signature (its bytes untouched) with its fields spelt another way that an
    RFC 8941 parser reads as the same values, or with a key given twice."""
    good = sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW, nonce="n" * 16)
    si, sig = good["Signature-Input"], good["Signature"]

    def si_(old: str, new: str) -> dict[str, str]:
        assert old in si
        return {**good, "Signature-Input": si.replace(old, new, 1)}

    raw = base64.b64decode(sig[len("sig1=:") : -1])
    loose = base64.b64encode(raw).decode()  # 64 bytes: "==" padding, 4 unused bits in [-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    odd = loose[:-3] + alphabet[alphabet.index(loose[-3]) ^ 1] + loose[-2:]
    assert base64.b64decode(odd) == raw and odd != loose
    return [
        ("created with a leading zero", si_(f"created={NOW}", f"created=0{NOW}")),
        ("created with leading zeros", si_(f"created={NOW}", f"created=0000{NOW}")),
        ("created twice", si_(f"created={NOW}", f"created={NOW};created={NOW}")),
        ("created twice, another first", si_(f"created={NOW}", f"created=1;created={NOW}")),
        ("keyid twice", si_('keyid="M1"', 'keyid="M2";keyid="M1"')),
        ("nonce twice", si_('nonce="', 'nonce="zzzzzzzzzzzzzzzz";nonce="')),
        ("space after a semicolon", si_(";keyid", "; keyid")),
        ("two spaces between components", si_('"@method" "@path"', '"@method"  "@path"')),
        ("space inside the list", si_('("@method"', '( "@method"')),
        ("signature's unused bits set", {**good, "Signature": f"sig1=:{odd}:"}),
    ]  # fmt: skip


def test_a_genuine_signature_respelt_is_refused() -> None:
    """Attack (redteam): RFC 9421 signs the parameters as *re-serialized* by the parser, so
    ``created=0123`` verified as ``created=123``, and a parameter given twice verified with the
    parser's pick (the last): one signature, many spellings, and values the checks did not see.
    Each genuine signature respelt is now refused typed (``Unauthenticated``, naming the field),
    before the signature is verified; the genuine spelling still verifies."""
    key, keys = _keys()
    for what, headers in _respelt(key):
        with pytest.raises(Unauthenticated) as err:
            _verify(headers, keys)
        assert not isinstance(err.value, ReplayedRequest), what
        assert err.value.param in ("Signature-Input", "Signature"), (what, err.value.message)
    assert _verify(sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW), keys)
    # expires, signed by the library itself
    seed = secrets.token_bytes(32)
    signed = _library_signed(
        seed, "M1", "POST", "https://x.example" + PATH, BODY, created=NOW, expires=NOW + 60
    )
    library = {"M1": SigningKey.from_seed(seed).public_key}
    assert _verify(signed, library).merchant_id == "M1"
    si = signed["signature-input"]
    assert f"expires={NOW + 60}" in si
    respelt = {
        **signed,
        "signature-input": si.replace(f"expires={NOW + 60}", f"expires=0{NOW + 60}"),
    }
    with pytest.raises(Unauthenticated) as err:
        _verify(respelt, library)
    assert err.value.param == "Signature-Input"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ('created=-5;keyid="M1";nonce="nnnnnnnnnnnnnnnn"', "created"),
        ('created=1099511627776;keyid="M1";nonce="nnnnnnnnnnnnnnnn"', "created"),
        ('created=1.5;keyid="M1";nonce="nnnnnnnnnnnnnnnn"', "created"),
        ('created;keyid="M1";nonce="nnnnnnnnnnnnnnnn"', "created"),
        ('keyid="M1";nonce="nnnnnnnnnnnnnnnn"', "created"),
        (f'created={NOW};expires={NOW};keyid="M1";nonce="nnnnnnnnnnnnnnnn"', "expires"),
        (f'created={NOW};expires=1099511627776;keyid="M1";nonce="nnnnnnnnnnnnnnnn"', "expires"),
        (f'created={NOW};keyid="M 1";nonce="nnnnnnnnnnnnnnnn"', "keyid"),
        (f'created={NOW};keyid=M1;nonce="nnnnnnnnnnnnnnnn"', "keyid"),
        (f'created={NOW};keyid="M1";nonce="nnnnnnnnnnnnnnn"', "nonce"),
        (f'created={NOW};keyid="M1";nonce="nnnnnnnnnnnnnnnn!"', "nonce"),
        (f'created={NOW};keyid="M1";nonce=:bm5ubm5ubm5ubm5ubm5u:', "nonce"),
        (f'created={NOW};keyid="M1";nonce="nnnnnnnnnnnnnnnn";alg="ED25519"', "alg"),
        (f'created={NOW};keyid="M1";nonce="nnnnnnnnnnnnnnnn";alg="hmac-sha256"', "alg"),
    ],
)
def test_signature_parameters_are_strict(params: str, param: str) -> None:
    """Each parameter read strictly, typed and naming it, before any signature is checked."""
    key, keys = _keys()
    good = sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW)
    components = good["Signature-Input"].split(";", 1)[0]
    headers = {**good, "Signature-Input": f'{components};{params};tag="{TAG}"'}
    with pytest.raises(Unauthenticated) as err:
        _verify(headers, keys)
    assert err.value.param == param, err.value.message


def test_the_fields_hold_one_signature_each() -> None:
    key, keys = _keys()
    good = sign_request(key, "M1", "POST", PATH, BODY, timestamp=NOW)
    si, sig = good["Signature-Input"], good["Signature"]
    for headers in (
        {**good, "Signature-Input": si + ", " + si.replace("sig1=", "sig2=")},
        {**good, "Signature": sig + ", " + sig.replace("sig1=", "sig2=")},
        {**good, "Signature-Input": si + ", " + si.replace("sig1=", "sig2="),
         "Signature": sig + ", " + sig.replace("sig1=", "sig2=")},
        {**good, "Signature": sig.replace("sig1=", "sig2=")},
        {**good, "Signature-Input": si.replace("sig1=", "sig2=")},
        {**good, "Signature": "sig1=(\"@method\")"},
        {**good, "Signature-Input": "sig1=:AAAA:"},
    ):  # fmt: skip
        with pytest.raises(Unauthenticated):
            _verify(headers, keys)


# --- against a real server ----------------------------------------------------------------


def _merchant_with_seed(world: World, name: str) -> tuple[MerchantClient, bytes]:
    seed = secrets.token_bytes(32)
    key = SigningKey.from_seed(seed)
    made = world.admin_api.merchants.create(
        name=name,
        city="Berlin",
        country="DE",
        mcc=5814,
        settlement_account="DE89370400440532013000",
        api_public_key=key.public_key,
        webhook_url=None,
    )
    return MerchantClient(world.http, made.id, key), seed


def _orders(m: MerchantClient) -> list[str]:
    r = m.request("GET", "/v1/merchant/orders?limit=100")
    assert r.status_code == 200, r.text
    return [o["order_id"] for o in r.json()["orders"]]


def test_server_refuses_replayed_tampered_and_stripped_requests(world: World) -> None:
    m, seed = _merchant_with_seed(world, "Signed Bakery")
    path = "/v1/merchant/orders"
    headers = {
        **sign_request(m.key, m.merchant_id, "POST", path, BODY),
        "Content-Type": "application/json",
    }
    first = world.http.post(path, content=BODY, headers=headers)
    assert first.status_code == 201, first.text
    before = _orders(m)
    # replayed as is, and replayed from another "client" a little later
    for _ in range(2):
        r = world.http.post(path, content=BODY, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "replayed_request"
    # a request signed by the library alone (any RFC 9421 client) is accepted
    lib = _library_signed(seed, m.merchant_id, "POST", world.server.base_url + path, BODY)
    r = world.http.post(path, content=BODY, headers={**lib, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    before = _orders(m)
    fresh = lambda **kw: {  # noqa: E731
        **sign_request(m.key, m.merchant_id, kw.pop("method", "POST"), kw.pop("path", path),
                       kw.pop("body", BODY), **kw),
        "Content-Type": "application/json",
    }  # fmt: skip
    cases: list[tuple[str, str, str, bytes, dict[str, str]]] = [
        ("tampered body", "POST", path, BODY.replace(b"250", b"1"), fresh()),
        ("stripped Signature", "POST", path, BODY,
         {k: v for k, v in fresh().items() if k != "Signature"}),
        ("stripped Signature-Input", "POST", path, BODY,
         {k: v for k, v in fresh().items() if k != "Signature-Input"}),
        ("stripped Content-Digest", "POST", path, BODY,
         {k: v for k, v in fresh().items() if k != "Content-Digest"}),
        ("signed for PUT", "POST", path, BODY, fresh(method="PUT")),
        ("signed for another path", "POST", path, BODY, fresh(path="/v1/merchant/static-codes")),
        ("signed with a query", "POST", path, BODY, fresh(path=path + "?x=1")),
        ("expired", "POST", path, BODY, fresh(timestamp=int(time.time()) - TOLERANCE - 60)),
        ("from the future", "POST", path, BODY, fresh(timestamp=int(time.time()) + TOLERANCE + 60)),
        ("another merchant's id", "POST", path, BODY, {
            **fresh(), "Signature-Input": fresh()["Signature-Input"].replace(
                m.merchant_id, "MNOBODY00")}),
        ("idempotency key swapped", "POST", path, BODY,
         {**fresh(idempotency_key="k-" + secrets.token_hex(4)), "Idempotency-Key": "k-other"}),
    ]  # fmt: skip
    for what, method, sent_path, body, h in cases:
        r = world.http.request(method, sent_path, content=body, headers=h)
        assert r.status_code == 401, (what, r.status_code, r.text)
        assert r.json()["error"]["code"] in ("unauthenticated", "replayed_request"), what
    assert _orders(m) == before  # nothing was created by any of them


def test_server_accepts_a_signature_over_an_encoded_path(world: World) -> None:
    m = world.merchant("Encoded Paths")
    order = m.order([("Tea", 1, 250)])
    for sent in (
        f"/v1/merchant/orders/{order['order_id']}",
        "/v1/merchant/orders/" + "".join(f"%{b:02X}" for b in order["order_id"].encode()),
    ):
        h = sign_request(m.key, m.merchant_id, "GET", sent)
        r = world.http.get(sent, headers=h)
        assert r.status_code == 200, (sent, r.text)
        assert r.json()["order_id"] == order["order_id"]
    # the decoded form signed, the encoded form sent: not what was sent, refused
    encoded = "/v1/merchant/orders/" + "".join(f"%{b:02X}" for b in order["order_id"].encode())
    h = sign_request(m.key, m.merchant_id, "GET", f"/v1/merchant/orders/{order['order_id']}")
    assert world.http.get(encoded, headers=h).status_code == 401


def test_signed_request_keeps_working_for_key_management_only_with_the_signature(
    world: World,
) -> None:
    m = world.merchant("Keys By Signature")
    body = json.dumps({"scopes": ["orders:read"]}).encode()
    h = sign_request(m.key, m.merchant_id, "POST", "/v1/merchant/api-keys", body)
    r = world.http.post(
        "/v1/merchant/api-keys", content=body, headers={**h, "Content-Type": "application/json"}
    )
    assert r.status_code == 201, r.text
