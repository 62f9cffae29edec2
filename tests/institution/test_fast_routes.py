"""The two hot routes without the framework (POST /v1/payments and POST /v1/payments/lookup)
answer exactly as the framework's routes do.

The same institution is served twice in-process: by the app as deployed (the fast routes) and
by the same app with ``fast=False`` (every request through FastAPI's routes, request models and
exception handlers). Every request below goes to both, and both answers must be the same:
status, ``Retry-After`` and body. Attacks: wrong, missing and repeated content types, bad JSON,
duplicate keys, missing, extra and mistyped fields, bad and repeated Idempotency-Keys, a
tampered code, a tampered or foreign authorization, replays, a rate-limited address. Over real
sockets the same routes are attacked in tests/institution/test_http_errors.py and
tests/institution/test_payments.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from safescan.institution.db import Database
from safescan.institution.http.app import create_app
from safescan.institution.http.wallet import PaymentCreate, payment_fields
from safescan.institution.keystore import KeyStore
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution
from tests.institution.harness import PASSPHRASE, b64, init_db
from tests.institution.loadprep import make_payables

LOOKUP = "/v1/payments/lookup"
PAY = "/v1/payments"


@dataclass
class Pair:
    inst: Institution
    fast: Any
    routed: Any
    payables: list[Any]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with tempfile.TemporaryDirectory(prefix="safescan-fast-") as d:
        db_url = f"sqlite:///{Path(d) / 'f.db'}"
        keys = Path(d) / "keys"
        init_db(db_url, keys)
        inst = Institution(Database(db_url), KeyStore(keys).load(PASSPHRASE.encode()))
        payables = make_payables(inst, 1, 40, 1)[0]
        limiter = RateLimiter(1000.0, 1000.0)
        fast = create_app(inst, public_limiter=limiter, background=False)
        routed = create_app(inst, public_limiter=limiter, background=False, fast=False)
        try:
            yield Pair(inst, fast, routed, list(payables))
        finally:
            inst.db.dispose()


def _send(app: Any, path: str, content: bytes, headers: list[tuple[str, str]]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://test") as client:
            return await client.post(path, content=content, headers=headers)

    return asyncio.run(go())


def _same(
    pair: Pair,
    path: str,
    content: bytes,
    headers: list[tuple[str, str]] | None = None,
    *,
    fast_first: bool = False,
) -> httpx.Response:
    """Send the request to both apps; their answers must be the same. Returns the fast one."""
    hdrs = [("content-type", "application/json")] if headers is None else headers
    order = [pair.fast, pair.routed] if fast_first else [pair.routed, pair.fast]
    first, second = (_send(app, path, content, hdrs) for app in order)
    fast, routed = (first, second) if fast_first else (second, first)
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    assert fast.headers.get("retry-after") == routed.headers.get("retry-after")
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.content == routed.content, (fast.text, routed.text)
    return fast


def _body(code: str, auth: str, **extra: Any) -> bytes:
    return json.dumps({"code": code, "authorization": auth, **extra}).encode()


def _next(pair: Pair) -> tuple[str, str, Any]:
    p = pair.payables.pop(0)  # in counter order (a lookup fences its counter)
    return p.code, b64(p.authorization.to_bytes()), p


MALFORMED: list[tuple[str, bytes, list[tuple[str, str]] | None]] = [
    ("no content type", b'{"code":"x","authorization":"AAAA"}', []),
    ("text/plain", b'{"code":"x","authorization":"AAAA"}', [("content-type", "text/plain")]),
    ("form", b"code=x&authorization=AAAA", [("content-type", "application/x-www-form-urlencoded")]),
    (
        "two content types",
        b'{"code":"x","authorization":"AAAA"}',
        [("content-type", "application/json"), ("content-type", "text/plain")],
    ),
    ("+json", b'{"code":"x","authorization":"AAAA"}', [("content-type", "application/x+json")]),
    ("bad JSON", b'{"code": "x", "authorization": ', None),
    ("not an object", b'["x", "AAAA"]', None),
    ("empty body", b"", None),
    ("null", b"null", None),
    ("NaN", b'{"code": NaN, "authorization": "AAAA"}', None),
    ("missing code", b'{"authorization": "AAAA"}', None),
    ("missing authorization", b'{"code": "SS1.x"}', None),
    ("extra field", b'{"code": "SS1.x", "authorization": "AAAA", "amount": 1}', None),
    ("code a number", b'{"code": 5, "authorization": "AAAA"}', None),
    ("authorization a list", b'{"code": "SS1.x", "authorization": ["AAAA"]}', None),
    ("code empty", b'{"code": "", "authorization": "AAAA"}', None),
    ("code not ASCII", '{"code": "SS1.é", "authorization": "AAAA"}'.encode(), None),
    ("authorization not base64", b'{"code": "SS1.x", "authorization": "A A*"}', None),
    ("authorization too long", b'{"code": "SS1.x", "authorization": "' + b"A" * 2001 + b'"}', None),
    ("not UTF-8", b'{"code": "SS1.\xff", "authorization": "AAAA"}', None),
    (
        "duplicate keys",
        b'{"code": "SS1.x", "authorization": "AAAA", "code": 7}',
        None,
    ),
    (
        "bad Idempotency-Key",
        b'{"code": "SS1.x", "authorization": "AAAA"}',
        [("content-type", "application/json"), ("idempotency-key", "has space")],
    ),
    (
        "two Idempotency-Keys",
        b'{"code": "SS1.x", "authorization": "AAAA"}',
        [
            ("content-type", "application/json"),
            ("idempotency-key", "k-000001"),
            ("idempotency-key", "k-000002"),
        ],
    ),
    ("too large", b'{"code": "' + b"A" * 70_000 + b'"}', None),
]


@pytest.mark.parametrize("path", [LOOKUP, PAY])
@pytest.mark.parametrize(
    ("content", "headers"), [(c, h) for _, c, h in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_requests_get_the_frameworks_answer(
    pair: Pair, path: str, content: bytes, headers: list[tuple[str, str]] | None
) -> None:
    """Both fast routes answer them exactly as the framework does (they decline them: one
    header and body reader for both), each with a typed 4xx (and nothing is paid)."""
    hdrs = headers if headers is not None else [("content-type", "application/json")]
    r = _same(pair, path, content, hdrs)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["type"] and err["code"] and err["message"], err


# content types the framework does not take as JSON, and JSON ones written another way: the
# fast payment route once took any type starting "application/json" and only the last of two
PAY_CONTENT_TYPES: list[list[tuple[str, str]]] = [
    [("content-type", "application/jsonx")],
    [("content-type", "application/json-patch+json")],
    [("content-type", "application/json5")],
    [("content-type", "Application/JSON")],
    [("content-type", "application/json;charset=utf-8")],
    [("content-type", "text/plain"), ("content-type", "application/json")],
    [("content-type", "application/json"), ("content-type", "application/json")],
    [("content-type", "application/json"), ("idempotency-key", "")],
]


@pytest.mark.parametrize("headers", PAY_CONTENT_TYPES, ids=lambda h: repr(h)[:60])
def test_a_payment_with_an_unusual_head_is_answered_as_the_framework_answers_it(
    pair: Pair, headers: list[tuple[str, str]]
) -> None:
    """A genuine payment sent with each head: the framework's route pays or refuses it; the
    deployed app then gives the same answer, byte for byte, as the framework gives to it again
    (a refusal the same; a payment a replay, never paid twice)."""
    code, auth, _ = _next(pair)
    body = _body(code, auth)
    routed = _send(pair.routed, PAY, body, headers)
    fast = _send(pair.fast, PAY, body, headers)
    assert fast.headers["content-type"] == routed.headers["content-type"]
    if routed.status_code == 201:  # paid by the framework: then both see it as a replay
        assert fast.status_code != 201, fast.text
        routed = _send(pair.routed, PAY, body, headers)
    assert (fast.status_code, fast.content) == (routed.status_code, routed.content)


def test_a_lookup_of_an_unpaid_authorization_settles_it_the_same_way(pair: Pair) -> None:
    code, auth, _ = _next(pair)
    r = _same(pair, LOOKUP, _body(code, auth))
    assert r.status_code == 200
    again = _same(pair, LOOKUP, _body(code, auth), fast_first=True)  # a replay
    assert again.content == r.content
    # settled: the authorization can never be paid now, on either path
    for app in (pair.fast, pair.routed):
        paid = _send(app, PAY, _body(code, auth), [("content-type", "application/json")])
        assert paid.status_code >= 400, paid.text


def test_a_lookup_of_a_payment_names_it_the_same_way(pair: Pair) -> None:
    code, auth, _ = _next(pair)
    made = _send(pair.fast, PAY, _body(code, auth), [("content-type", "application/json")])
    assert made.status_code == 201, made.text
    r = _same(pair, LOOKUP, _body(code, auth))
    assert r.status_code == 200 and made.json()["payment_id"] in r.text

    # with an Idempotency-Key the first lookup stores its answer under the key and a replay gets
    # the stored one: each path gets its own new key, then its replay, and they must agree
    def keyed(app: Any, key: str) -> httpx.Response:
        hdrs = [("content-type", "application/json; charset=utf-8"), ("idempotency-key", key)]
        return _send(app, LOOKUP, _body(code, auth), hdrs)

    for _ in range(2):  # the first answer, then the replay
        routed, fast = keyed(pair.routed, "look-routed-1"), keyed(pair.fast, "look-fast-1")
        assert (fast.status_code, fast.content) == (routed.status_code, routed.content)
        assert made.json()["payment_id"] in fast.text


@pytest.mark.parametrize("first", ["fast", "routed"])
def test_a_keyed_payment_and_its_replays_are_the_same_bytes_on_both_paths(
    pair: Pair, first: str
) -> None:
    """An Idempotency-Key's first answer and every replay are byte for byte the same, whichever
    path (fast or routed) made the payment and whichever answers the retry; an answer sent
    without a key is the framework's JSON too (compact)."""
    code, auth, _ = _next(pair)
    key = f"pay-bytes-{first}"
    hdrs = [("content-type", "application/json"), ("idempotency-key", key)]
    apps = {"fast": pair.fast, "routed": pair.routed}
    made = _send(apps[first], PAY, _body(code, auth), hdrs)
    assert made.status_code == 201, made.text
    for app in (pair.fast, pair.routed, pair.fast):
        again = _send(app, PAY, _body(code, auth), hdrs)
        assert (again.status_code, again.content) == (201, made.content)
    plain_code, plain_auth, _ = _next(pair)
    plain = _send(apps[first], PAY, _body(plain_code, plain_auth), hdrs[:1])
    assert plain.status_code == 201, plain.text
    assert b", " not in plain.content and b'": ' not in plain.content  # compact, as routed


def _tampered(auth: str, at: int) -> str:
    raw = bytearray(base64.b64decode(auth))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("at", [-1, -40, 5, 20])
def test_a_tampered_authorization_is_refused_the_same_way(pair: Pair, at: int) -> None:
    code, auth, _ = _next(pair)
    r = _same(pair, LOOKUP, _body(code, _tampered(auth, at)))
    assert r.status_code >= 400


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
        lambda c: c[:12] + c[13:],
        lambda c: "SS1.x",
    ],
)
def test_a_tampered_or_swapped_code_is_answered_the_same_way(pair: Pair, mutate: Any) -> None:
    code, auth, _ = _next(pair)
    other, _, _ = _next(pair)
    _same(pair, LOOKUP, _body(mutate(code), auth))
    _same(pair, LOOKUP, _body(other, auth))  # another order's code with this authorization


@pytest.mark.parametrize("auth", ["AAAA", "oA==", base64.b64encode(b"\xa0" * 40).decode()])
def test_an_authorization_that_is_not_one_is_refused_the_same_way(pair: Pair, auth: str) -> None:
    code, _, _ = _next(pair)
    r = _same(pair, LOOKUP, _body(code, auth))
    assert r.status_code == 400


def test_the_rate_limit_answers_the_same_way() -> None:
    """A limiter that lets one request through: the second from the address is 429 with
    Retry-After on both paths (limited after the body is validated, as the routed one is)."""
    with tempfile.TemporaryDirectory(prefix="safescan-fast-rl-") as d:
        db_url = f"sqlite:///{Path(d) / 'f.db'}"
        keys = Path(d) / "keys"
        init_db(db_url, keys)
        inst = Institution(Database(db_url), KeyStore(keys).load(PASSPHRASE.encode()))
        try:
            body = _body("SS1.x", "AAAA")
            hdrs = [("content-type", "application/json")]
            answers = {}
            for fast in (True, False):
                app = create_app(inst, public_limiter=RateLimiter(0.001, 1.0), background=False)
                if not fast:
                    app = create_app(
                        inst, public_limiter=RateLimiter(0.001, 1.0), background=False, fast=False
                    )
                first = _send(app, LOOKUP, body, hdrs)
                second = _send(app, LOOKUP, body, hdrs)
                malformed = _send(app, LOOKUP, b"{", hdrs)  # refused before the limit
                answers[fast] = [
                    (r.status_code, r.headers.get("retry-after"), r.content)
                    for r in (first, second, malformed)
                ]
            assert answers[True] == answers[False]
            assert answers[True][1][0] == 429 and answers[True][1][1] is not None
            assert answers[True][2][0] == 400
        finally:
            inst.db.dispose()


# --- the hand-read body against the request model ---------------------------------------------

_VALUES: list[Any] = [
    "SS1.ABC",
    "",
    "x",
    "A" * 2000,
    "A" * 2001,
    "SS1.é",
    "SS1.\u00a0",
    "SS1.\x00",
    "SS1.\x1f",
    "SS1.\x7f",
    "abc\n",
    "\nabc",
    " abc ",
    "SS1.😀",
    "SS1.\u202e",
    "A A",
    "A*A",
    "-_+/=",
    "AAAA=",
    "ＡＡＡＡ",  # full-width letters: \w-like, not [A-Za-z]
    "٣٣",  # Arabic-Indic digits: \d-like, not [0-9]
    5,
    0,
    -1,
    10**30,
    10**400,
    1.5,
    1e308,
    True,
    False,
    None,
    [],
    ["AAAA"],
    {},
    {"a": [{"b": [1, 2, {"c": None}]}]},
]


def _bodies() -> Iterator[tuple[str, bytes]]:
    """Bodies of every shape: each field every value, keys missing, extra, repeated, escaped
    or cased otherwise, JSON other than an object, JSON written oddly, not JSON at all."""
    for i, code in enumerate(_VALUES):
        for j, auth in enumerate(_VALUES):
            if isinstance(code, str) or isinstance(auth, str) or i == j:
                doc = {"code": code, "authorization": auth}
                yield f"code#{i} auth#{j}", json.dumps(doc).encode()
                yield f"code#{i} auth#{j} ascii=False", json.dumps(doc, ensure_ascii=False).encode()
                yield (
                    f"auth#{j} code#{i}",
                    json.dumps({"authorization": auth, "code": code}).encode(),
                )
    ok = '"code": "SS1.ABC", "authorization": "AAAA"'
    raw: list[tuple[str, bytes | str]] = [
        ("compact", '{"code":"SS1.ABC","authorization":"AAAA"}'),
        ("spaced", '  {\n\t"code" :  "SS1.ABC" ,\r\n "authorization":"AAAA"}  \n'),
        ("escaped key", '{"\\u0063ode": "SS1.ABC", "authorization": "AAAA"}'),
        ("escaped value", '{"code": "SS1.\\u0041BC", "authorization": "A\\u0041AA"}'),
        ("escaped slash", '{"code": "SS1.A\\/B", "authorization": "AA\\/A"}'),
        ("escaped newline", '{"code": "SS1.A\\nB", "authorization": "AAAA"}'),
        ("escaped NUL", '{"code": "SS1.A\\u0000", "authorization": "AAAA"}'),
        ("lone surrogate", '{"code": "SS1.\\ud800", "authorization": "AAAA"}'),
        ("surrogate pair", '{"code": "SS1.\\ud83d\\ude00", "authorization": "AAAA"}'),
        ("raw control", '{"code": "SS1.\x01", "authorization": "AAAA"}'),
        ("raw tab", '{"code": "SS1.\t", "authorization": "AAAA"}'),
        ("Code", '{"Code": "SS1.ABC", "authorization": "AAAA"}'),
        ("code with space", '{"code ": "SS1.ABC", "authorization": "AAAA"}'),
        ("missing code", '{"authorization": "AAAA"}'),
        ("missing authorization", '{"code": "SS1.ABC"}'),
        ("empty object", "{}"),
        ("extra", "{" + ok + ', "amount": 1}'),
        ("extra null", "{" + ok + ', "x": null}'),
        ("duplicate code", "{" + ok + ', "code": "SS1.XYZ"}'),
        ("duplicate code, wrong type", "{" + ok + ', "code": 7}'),
        ("duplicate authorization", '{"authorization": "BBBB", ' + ok + "}"),
        ("duplicate, first bad", '{"code": "é", ' + ok + "}"),
        ("trailing comma", "{" + ok + ",}"),
        ("single quotes", "{'code': 'SS1.ABC', 'authorization': 'AAAA'}"),
        ("comment", "{" + ok + "} // x"),
        ("two objects", "{" + ok + "}{" + ok + "}"),
        ("trailing garbage", "{" + ok + "}x"),
        ("NaN", '{"code": NaN, "authorization": "AAAA"}'),
        ("Infinity", '{"code": "SS1.ABC", "authorization": Infinity}'),
        ("huge exponent", '{"code": 1e999999, "authorization": "AAAA"}'),
        ("array", '["SS1.ABC", "AAAA"]'),
        ("string", '"SS1.ABC"'),
        ("number", "12"),
        ("null", "null"),
        ("true", "true"),
        ("empty", ""),
        ("whitespace", "  \n"),
        ("nested deep", "[" * 5000 + "]" * 5000),
        (
            "nested deep in a field",
            '{"code": ' + "[" * 3000 + "]" * 3000 + ', "authorization": "A"}',
        ),
        ("object in object", '{"code": {"code": "SS1.ABC"}, "authorization": "AAAA"}'),
    ]
    for name, text in raw:
        yield name, text.encode() if isinstance(text, str) else text
    good = ("{" + ok + "}").encode()
    yield "BOM", b"\xef\xbb\xbf" + good
    yield "UTF-16", ("{" + ok + "}").encode("utf-16")
    yield "invalid UTF-8", b'{"code": "SS1.\xff", "authorization": "AAAA"}'
    yield "overlong UTF-8", b'{"code": "SS1.\xc0\xaf", "authorization": "AAAA"}'
    yield "UTF-8 surrogate", b'{"code": "SS1.\xed\xa0\x80", "authorization": "AAAA"}'
    yield "NUL after", good + b"\x00"
    rng = random.Random(20)  # fixed: the same mutations every run
    for n in range(3000):
        body = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(body) + 1)
            choice = rng.random()
            if choice < 0.4 and at < len(body):
                body[at] = rng.choice(b'{}[]":,\\ \t\nAa\xc3\xa9\x00\x7f\xff0123456789-+.eEtfn')
            elif choice < 0.7:
                body[at:at] = bytes([rng.randrange(256)])
            elif at < len(body):
                del body[at]
        yield f"mutation {n}", bytes(body)


def _by_model(body: bytes) -> tuple[str, str] | None:
    try:
        req = PaymentCreate.model_validate_json(body)
    except ValidationError:
        return None
    return req.code, req.authorization


def test_the_hand_read_body_takes_exactly_what_the_request_model_takes() -> None:
    """The fast routes read the body by hand (payment_fields), not with the request model:
    over ~7,000 bodies (every field of every type and text class, missing, extra, repeated and
    escaped keys, odd JSON, not JSON, invalid UTF-8, deep nesting, 3,000 seeded mutations of
    a good body) the hand reader accepts exactly the bodies the model accepts and reads the same
    two values from them; what both refuse is declined to the routed route, whose model
    answers it. Fails if a rule of the hand reader is dropped (its length, its characters, its
    exact keys or types). Bodies with a backslash or a key not written exactly once the hand
    reader leaves to the routed route on purpose (a key twice is its typed ``duplicate_key``,
    tests/institution/test_strict_requests.py)."""
    differ = []
    accepted = 0
    for name, body in _bodies():
        hand, model = payment_fields(body), _by_model(body)
        left = b"\\" in body or body.count(b'"code"') != 1 or body.count(b'"authorization"') != 1
        if hand != model and not (hand is None and left):
            differ.append((name, body[:80], hand, model))
        accepted += hand is not None
    assert not differ, differ[:5]
    assert accepted > 100  # the good ones are taken (the fast route is the one that answers)


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": "SS1.\\u00e9", "authorization": "AAAA"}',
        b'{"code": "SS1.x", "authorization": "AAAA", "code": "SS1.\\ud800"}',
        b'{"code": "SS1.x", "authorization": "AAAA\\n"}',
        b'{"code": "SS1.x", "authorization": "' + b"A" * 2001 + b'"}',
        b'{"code": "' + b"A" * 2001 + b'", "authorization": "AAAA"}',
        b'{"code": "SS1.x", "authorization": 100000000000000000000000000000000}',
        b'{"code": "SS1.x", "authorization": {"a": [[[[{}]]]]}}',
        b'{"code": "SS1.x", "authorization": "\xd9\xa3\xd9\xa3"}',
        b'{"code": "SS1.x", "authorization": "AAAA", "Code": "SS1.x"}',
        b"\xef\xbb\xbf{}",
    ],
)
@pytest.mark.parametrize("path", [LOOKUP, PAY])
def test_bodies_the_model_refuses_get_its_answer_on_both_paths(
    pair: Pair, path: str, body: bytes
) -> None:
    """Through the whole app: the same status, headers and error body, byte for byte."""
    r = _same(pair, path, body)
    assert r.status_code in (400, 413, 415, 422), r.text
