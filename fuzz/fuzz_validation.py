"""Fuzz the input checks of issue #13: text, numbers, public keys, look-alikes, web POS input,
Host/Origin, revocation lists, display escaping.

    .venv/bin/python fuzz/fuzz_validation.py -atheris_runs=100000
    .venv/bin/python fuzz/fuzz_validation.py -max_total_time=300 [CORPUS_DIR ...]

Input layout: ``data[0] % 10`` picks the target, the rest is its input:

 0  clean_text(UTF-8 text)          accepted: NFC, no forbidden character, <= 64 characters
 1  json_int(JSON value)            accepted: an int, never a bool, in range
 2  parse_int(text)                 accepted: ASCII digits only, value in range
 3  check_ed25519_public(32 bytes)  accepted: not small order, y < p
 4  check_x25519_public(32 bytes)   accepted: not small order, canonical
 5  look-alikes (text)              name_keys / protected_match / compatibility_letters run
 6  web POS items_from_json(JSON)   accepted: quantities and prices are ints, names clean
 7  Host / Origin checks (text)     only typed refusals
 8  RevocationList.from_bytes       only typed refusals (unsigned, so never accepted)
 9  visible()/term()/html_text()    output holds no forbidden character, no raw '<' or '['

Properties beyond "only typed errors" are asserted per target.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz._common import count, main
from safescan.code import SigningKey
from safescan.code.certs import RevocationList, TrustStore
from safescan.code.display import html_text, term, visible
from safescan.code.errors import SafescanError
from safescan.code.lookalike import (
    compatibility_letters,
    name_keys,
    protected_match,
    protected_names,
)
from safescan.code.numbers import json_int, parse_int
from safescan.code.pubkeys import (
    ED25519_SMALL_ORDER,
    X25519_SMALL_ORDER,
    P,
    check_ed25519_public,
    check_x25519_public,
)
from safescan.code.text import clean_text, forbidden_char
from safescan.merchant.input import items_from_json
from safescan.merchant.websec import HostPolicy

OUTCOMES: Counter[str] = Counter()
TARGETS = 10
_TRUST = TrustStore({1: SigningKey.from_seed(bytes(range(32))).public_key})
_HOSTS = HostPolicy(["127.0.0.1", "localhost", "[::1]"], 8090)
_NAMES = protected_names()


def _json(payload: bytes) -> object:
    try:
        return json.loads(payload.decode("utf-8", "replace"))
    except ValueError:
        return payload.decode("latin-1")


def _target(mode: int, payload: bytes) -> None:
    text = payload.decode("utf-8", "replace")
    if mode == 0:
        out = clean_text(text, field="text")
        assert forbidden_char(out) is None and len(out) <= 64
    elif mode == 1:
        value = json_int(_json(payload), field="amount")
        assert type(value) is int
    elif mode == 2:
        value = parse_int(text, field="amount")
        assert text.isascii() and text.isdigit() and value == int(text)
    elif mode == 3:
        key = check_ed25519_public(payload[:32])
        assert key not in ED25519_SMALL_ORDER
        assert int.from_bytes(key, "little") & ((1 << 255) - 1) < P
    elif mode == 4:
        key = check_x25519_public(payload[:32])
        assert key not in X25519_SMALL_ORDER and int.from_bytes(key, "little") < P
    elif mode == 5:
        name_keys(text[:200])
        protected_match(text[:64], _NAMES)
        compatibility_letters(text[:200])
    elif mode == 6:
        doc = _json(payload)
        items = items_from_json(doc if isinstance(doc, dict) else {"items": doc})
        for i in items:
            assert type(i.quantity) is int and type(i.unit_price) is int
            assert forbidden_char(i.name) is None
    elif mode == 7:
        host, _, origin = text.partition("\n")
        checked = _HOSTS.check_host(host)
        _HOSTS.check_origin("POST", origin, None, checked)
        assert origin.lower().startswith("http://")
    elif mode == 8:
        RevocationList.from_bytes(payload, _TRUST)
        raise AssertionError("an unsigned revocation list was accepted")
    else:
        for shown in (visible(text), term(text)):
            assert forbidden_char(shown) is None
        assert "<" not in html_text(text) and "\x1b" not in term(text)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the atheris / libFuzzer name)
    """One fuzz input; raises only on a crash (an untyped exception or a broken property)."""
    if not data:
        return
    try:
        _target(data[0] % TARGETS, data[1:])
    except SafescanError as exc:
        count(OUTCOMES, exc)
    else:
        count(OUTCOMES, None)


def seeds() -> list[bytes]:
    """Inputs that pass, and the attacks of the e2e tests, for each target."""
    samples: dict[int, list[bytes]] = {
        0: ["Café Lumière".encode(), "Shop\u202eevil".encode(), b"a\x85b", "\u200b".encode()],
        1: [b"150", b"true", b'"150"', b'"1_0"', b"1.0", b"1e2", b"null", b"-5"],
        2: [b"150", b"1_0", b"+5", b" 5", "١٢".encode(), b"0"],
        3: [bytes([1]) + bytes(31), *sorted(ED25519_SMALL_ORDER)[:4]],
        4: [bytes(32), *sorted(X25519_SMALL_ORDER)[:4]],
        5: ["𝐏𝐚𝐲𝐏𝐚𝐥".encode(), "РаyРаl".encode(), b"rnicrosoft", "ℊoogle".encode()],
        6: [
            b'{"items": [{"name": "Tea", "quantity": 1, "unit_price": 200}]}',
            b'{"items": [{"name": "Tea", "quantity": true, "unit_price": "2"}]}',
        ],
        7: [b"127.0.0.1:8090\nhttp://127.0.0.1:8090", b"evil.example:8090\nnull"],
        8: [
            RevocationList.issue(
                SigningKey.from_seed(bytes(range(32))),
                1,
                sequence=3,
                issued_at=0,
                serials={1, 2},
                subjects={"M1"},
            ).to_bytes()[:-10]
        ],
        9: [b"[bold]x[/] \x1b[2J <script>", "\u202e[link=x]y".encode()],
    }
    return [bytes([mode]) + s for mode, items in samples.items() for s in items]


TOKENS = (b"[", b"[/]", b"\x1b[", b"\xe2\x80\xae", b'"', b"true", b"1e2", b"http://", b":8090")


if __name__ == "__main__":
    main(TestOneInput, seeds(), TOKENS, OUTCOMES)
