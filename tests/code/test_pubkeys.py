"""Public-key validation (issue #13 item 7): the small-order lists re-derived, not trusted."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from safescan.carrier.channel import KeyKind, card_handshake
from safescan.carrier.errors import ChannelError
from safescan.code.certs import Certificate, Role, issue_certificate
from safescan.code.errors import CertificateError, KeyFileError
from safescan.code.keys import SchemePublicKey, SigningKey, VerifyKey
from safescan.code.pubkeys import (
    ED25519_SMALL_ORDER,
    X25519_SMALL_ORDER,
    P,
    WeakPublicKey,
    check_ed25519_public,
    check_x25519_public,
)

D = (-121665 * pow(121666, -1, P)) % P


def _sqrt(a: int) -> int | None:
    a %= P
    x = pow(a, (P + 3) // 8, P)
    if (x * x - a) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    return x if (x * x - a) % P == 0 else None


def _add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return (
        (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P,
    )


def _order(point: tuple[int, int]) -> int | None:
    q = point
    for n in range(1, 9):
        if q == (0, 1):
            return n
        q = _add(q, point)
    return None


def test_ed25519_list_is_exactly_the_8_torsion_subgroup() -> None:
    assert len(ED25519_SMALL_ORDER) == 14
    points = set()
    for enc in ED25519_SMALL_ORDER:
        y = (int.from_bytes(enc, "little") & ((1 << 255) - 1)) % P
        x = _sqrt((y * y - 1) * pow(D * y * y + 1, -1, P))
        assert x is not None, enc.hex()
        for sx in {x, (-x) % P}:
            order = _order((sx, y))
            assert order is not None and 8 % order == 0, enc.hex()
            points.add((sx, y))
    assert len(points) == 8  # the whole torsion subgroup, no more


def test_x25519_list_is_the_montgomery_image_and_forces_a_zero_secret() -> None:
    assert len(X25519_SMALL_ORDER) == 14
    us = set()
    for enc in ED25519_SMALL_ORDER:
        y = (int.from_bytes(enc, "little") & ((1 << 255) - 1)) % P
        if y != 1:
            us.add((1 + y) * pow(1 - y, -1, P) % P)
    # y = -1 maps to u = 0 and y = 0 to u = 1; X25519 also takes points of the quadratic
    # twist, whose one point of order 2 is u = p - 1 (the identity has no u)
    us.add(P - 1)
    canonical = {int.from_bytes(e, "little") for e in X25519_SMALL_ORDER if e[31] < 0x80}
    assert {u % P for u in canonical} == us
    me = X25519PrivateKey.generate()
    for enc in X25519_SMALL_ORDER:
        with pytest.raises(ValueError):  # OpenSSL's all-zero shared-secret refusal
            me.exchange(X25519PublicKey.from_public_bytes(enc))


def test_every_small_order_and_non_canonical_key_is_refused_everywhere() -> None:
    for enc in ED25519_SMALL_ORDER:
        with pytest.raises(WeakPublicKey):
            check_ed25519_public(enc)
        with pytest.raises(KeyFileError):
            VerifyKey(enc)
    for k in range(19):
        with pytest.raises(WeakPublicKey):
            check_ed25519_public((P + k).to_bytes(32, "little"))
    for enc in X25519_SMALL_ORDER:
        with pytest.raises(WeakPublicKey):
            check_x25519_public(enc)
        with pytest.raises(KeyFileError):
            SchemePublicKey(1, enc)
    good = X25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(WeakPublicKey):
        check_x25519_public(good[:31] + bytes([good[31] | 0x80]))
    with pytest.raises(WeakPublicKey):
        check_x25519_public((P + 5).to_bytes(32, "little"))


def test_genuine_keys_pass() -> None:
    for _ in range(300):
        raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        assert check_ed25519_public(raw) == raw
        xraw = X25519PrivateKey.generate().public_key().public_bytes_raw()
        assert check_x25519_public(xraw) == xraw


def test_a_certificate_with_a_weak_key_does_not_parse() -> None:
    root = SigningKey.generate()
    cert = issue_certificate(
        root,
        1,
        serial=7,
        role=Role.CARRIER,
        subject="carrier:7",
        public_key=SigningKey.generate().public_key,
        not_before=0,
        not_after=10,
    )
    raw = cert.to_bytes()
    weak = raw.replace(cert.public_key.raw, bytes([1]) + bytes(31))
    with pytest.raises(CertificateError, match="small order"):
        Certificate.from_bytes(weak)


def test_the_card_refuses_a_small_order_host_key_in_the_secure_channel() -> None:
    key = Ed25519PrivateKey.generate()
    for enc in sorted(X25519_SMALL_ORDER):
        with pytest.raises(ChannelError):
            card_handshake(enc, key, KeyKind.CERTIFIED, b"id")
