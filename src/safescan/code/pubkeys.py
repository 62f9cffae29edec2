"""Validation of Ed25519 and X25519 public keys as they enter the system.

``cryptography`` (OpenSSL) loads any 32 bytes as a public key: an Ed25519 key of small order
(the identity point ``01 00 .. 00`` for one) then "verifies" signatures anyone can make
without a private key, and an X25519 key of small order forces a known shared secret. Every
public key that comes from outside (merchant API keys, certificates, carrier signing and
transport keys, institution and scheme keys in trust files and bundles, secure-channel keys) is
checked here first. This is validation, not arithmetic on secrets:

* **small order**: the encodings of the eight points of the curve's 8-torsion subgroup, with
  the sign bit (Ed25519) or the unused top bit (X25519) either way. The lists are libsodium's
  ``ge25519_has_small_order`` (``crypto_core/ed25519/ref10/ed25519_ref10.c``) and
  ``has_small_order`` (``crypto_scalarmult/curve25519/ref10/x25519_ref10.c``) blocklists,
  also given in D. J. Bernstein's "Curve25519: new Diffie-Hellman speed records" notes
  (cr.yp.to/ecdh.html, "small-order points") and discussed in Chalkias, Garillot, Nikolaenko,
  "Taming the many EdDSAs" (2020). ``tests/code/test_pubkeys.py`` re-derives them;
* **non-canonical encodings** (RFC 8032 section 5.1.3, RFC 7748 section 5): a coordinate
  ``>= p`` (``p = 2**255 - 19``); for X25519 also the top bit set (RFC 7748 masks it, so two
  encodings name one key: we accept only the canonical one);
* **Ed25519 points not on the curve** (RFC 8032 section 5.1.3 step 3: ``x**2 = (y**2 - 1) /
  (d y**2 + 1)`` has no square root): no signature can verify under such a key.

Not checked: a prime-order point plus a small-order component ("mixed order"); its owner holds
a private key, and cofactorless verification treats it like any other key.
"""

from __future__ import annotations

from safescan.code.errors import KeyFileError

P = 2**255 - 19
_D = (-121665 * pow(121666, -1, P)) % P
_MASK255 = (1 << 255) - 1


class WeakPublicKey(KeyFileError):
    """A public key of small order, in a non-canonical encoding, or not on the curve."""

    code = "weak_public_key"


def _blocklist(values: list[str]) -> frozenset[bytes]:
    """Each encoding with its top bit clear and set."""
    out = set()
    for hex_ in values:
        raw = bytes.fromhex(hex_)
        out.add(raw)
        out.add(raw[:31] + bytes([raw[31] ^ 0x80]))
    return frozenset(out)


#: Ed25519 small-order point encodings (y coordinate; sign bit either way): 14 byte strings.
ED25519_SMALL_ORDER: frozenset[bytes] = _blocklist(
    [
        "0000000000000000000000000000000000000000000000000000000000000000",  # y=0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # y=1, identity
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p-1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p (=0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p+1 (=1)
    ]
)
#: X25519 small-order u-coordinate encodings (top bit either way): 14 byte strings.
X25519_SMALL_ORDER: frozenset[bytes] = _blocklist(
    [
        "0000000000000000000000000000000000000000000000000000000000000000",  # u=0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # u=1, order 1
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",  # order 8
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # u=p-1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # u=p (=0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # u=p+1 (=1)
    ]
)


def _raw32(raw: object, what: str) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise WeakPublicKey(f"{what} must be 32 bytes")
    return raw


def check_ed25519_public(raw: object, *, what: str = "an Ed25519 public key") -> bytes:
    """``raw`` if it is a canonical encoding of an Ed25519 point of large order."""
    key = _raw32(raw, what)
    if key in ED25519_SMALL_ORDER:
        raise WeakPublicKey(f"{what} is a point of small order (a key anyone can sign for)")
    y = int.from_bytes(key, "little") & _MASK255
    if y >= P:
        raise WeakPublicKey(f"{what} is not canonically encoded (y >= p)")
    # RFC 8032 5.1.3: x^2 = (y^2 - 1) / (d y^2 + 1) must have a square root (Euler's criterion)
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, P) % P
    if x2 != 0 and pow(x2, (P - 1) // 2, P) != 1:
        raise WeakPublicKey(f"{what} is not a point on the curve")
    if x2 == 0 and key[31] & 0x80:
        raise WeakPublicKey(f"{what} is not canonically encoded (x = 0 with the sign bit set)")
    return key


def check_x25519_public(
    raw: object, *, what: str = "an X25519 public key", canonical: bool = True
) -> bytes:
    """``raw`` if it is an X25519 u-coordinate that is not of small order and, with
    ``canonical`` (keys that are stored or certified), canonically encoded. A one-time
    Diffie-Hellman input (the secure channel's host key, which a challenge may also fill)
    takes ``canonical=False``: RFC 7748 has the top bit masked and u >= p reduced."""
    key = _raw32(raw, what)
    if key in X25519_SMALL_ORDER:
        raise WeakPublicKey(f"{what} is a point of small order (it forces a known secret)")
    if canonical and (key[31] & 0x80 or int.from_bytes(key, "little") >= P):
        raise WeakPublicKey(f"{what} is not canonically encoded (u >= p or top bit set)")
    return key
