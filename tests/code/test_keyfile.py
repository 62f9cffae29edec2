"""Key files under attack: the scrypt cost a stolen file imposes, tampering, swapping,
truncation, downgrade and memory-bomb headers, and the legacy PKCS#8 form.

Every refusal is a :class:`KeyFileError`, never another exception or a wrong key."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.code import SchemeKey, SigningKey, keyfile
from safescan.code.errors import KeyFileError

PASS = b"correct horse battery"
SEED = bytes(range(32))
HEADER = struct.Struct(">4sBBB16s12s")


def body_of(pem: bytes) -> bytes:
    lines = [line for line in pem.splitlines() if not line.startswith(b"-----")]
    return base64.b64decode(b"".join(lines))


def pem_of(body: bytes) -> bytes:
    b64 = base64.b64encode(body)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"\n".join([b"-----BEGIN " + keyfile.LABEL + b"-----", *lines]) + (
        b"\n-----END " + keyfile.LABEL + b"-----\n"
    )


@pytest.fixture(scope="module")
def sealed() -> bytes:
    return keyfile.seal(Ed25519PrivateKey.from_private_bytes(SEED), PASS)


def test_a_stolen_file_costs_scrypt_n_2_15_per_guess(sealed: bytes) -> None:
    magic, log2_n, r, p, _salt, _nonce = HEADER.unpack_from(body_of(sealed))
    assert (magic, log2_n, r, p) == (b"SSK1", 15, 8, 1)
    assert log2_n == keyfile.LOG2_N
    # the raw key appears nowhere, neither in the file nor in its decoded body
    assert SEED not in sealed and SEED not in body_of(sealed) and PASS not in sealed


def test_round_trip_both_key_types_and_fresh_salt_each_time() -> None:
    ed = Ed25519PrivateKey.from_private_bytes(SEED)
    x = X25519PrivateKey.from_private_bytes(SEED)
    a, b = keyfile.seal(ed, PASS), keyfile.seal(ed, PASS)
    assert a != b  # fresh salt and nonce
    assert HEADER.unpack_from(body_of(a))[4] != HEADER.unpack_from(body_of(b))[4]
    for data in (a, b):
        got = keyfile.unseal(data, PASS)
        assert isinstance(got, Ed25519PrivateKey)
        assert got.private_bytes_raw() == SEED
    got_x = keyfile.unseal(keyfile.seal(x, PASS), PASS)
    assert isinstance(got_x, X25519PrivateKey) and got_x.private_bytes_raw() == SEED


@pytest.mark.parametrize("guess", [b"", b"correct horse batterY", PASS + b"\n", PASS[:-1], b"x"])
def test_wrong_passphrases_are_refused(sealed: bytes, guess: bytes) -> None:
    with pytest.raises(KeyFileError):
        keyfile.unseal(sealed, guess)


def test_saving_needs_a_passphrase() -> None:
    with pytest.raises(KeyFileError, match="passphrase is required"):
        keyfile.seal(Ed25519PrivateKey.generate(), b"")


def test_every_flipped_bit_outside_the_cost_byte_is_refused(sealed: bytes) -> None:
    """One bit flipped in each byte of the magic, salt, nonce and tag, and in every fifth
    byte of the ciphertext: refused.
    (The cost bytes have their own test: flipping them is a downgrade or a memory bomb.)"""
    body = body_of(sealed)
    size = HEADER.size
    tag = range(len(body) - 16, len(body))
    positions = [*range(size), *range(size, len(body) - 16, 5), *tag]  # every byte but ciphertext
    for i in positions:
        if i in (4, 5, 6):
            continue
        forged = bytearray(body)
        forged[i] ^= 0x01 << (i % 8)
        with pytest.raises(KeyFileError):
            keyfile.unseal(pem_of(bytes(forged)), PASS)


@pytest.mark.parametrize(
    ("log2_n", "r", "p"),
    [
        (14, 8, 1),  # downgraded cost
        (10, 8, 1),
        (0, 8, 1),
        (19, 8, 1),  # memory bomb (512 MiB)
        (40, 8, 1),
        (255, 8, 1),
        (15, 1, 1),  # r lowered
        (15, 255, 1),  # r raised: memory bomb
        (15, 8, 0),
        (15, 8, 200),  # p raised: CPU bomb
    ],
)
def test_cost_out_of_bounds_is_refused_before_any_derivation(
    sealed: bytes, log2_n: int, r: int, p: int
) -> None:
    body = bytearray(body_of(sealed))
    body[4:7] = bytes([log2_n, r, p])
    with pytest.raises(KeyFileError, match="cost out of bounds"):
        keyfile.unseal(pem_of(bytes(body)), PASS)


def test_a_raised_cost_within_bounds_fails_like_a_wrong_passphrase(sealed: bytes) -> None:
    """The header is authenticated: claiming N=2^16 for a file sealed at 2^15 is refused."""
    body = bytearray(body_of(sealed))
    body[4] = 16
    with pytest.raises(KeyFileError, match="wrong passphrase or corrupt"):
        keyfile.unseal(pem_of(bytes(body)), PASS)


def test_swapped_headers_and_ciphertexts_are_refused() -> None:
    one = body_of(keyfile.seal(Ed25519PrivateKey.generate(), PASS))
    two = body_of(keyfile.seal(Ed25519PrivateKey.generate(), PASS))
    size = HEADER.size
    for forged in (one[:size] + two[size:], two[:size] + one[size:]):
        with pytest.raises(KeyFileError):
            keyfile.unseal(pem_of(forged), PASS)
    # the salt of one with the nonce and ciphertext of the other
    mixed = one[:7] + two[7:23] + one[23:]
    with pytest.raises(KeyFileError):
        keyfile.unseal(pem_of(mixed), PASS)


def test_truncated_files_are_refused(sealed: bytes) -> None:
    body = body_of(sealed)
    for cut in (0, 3, 4, 7, HEADER.size - 1, HEADER.size, HEADER.size + 15, len(body) - 1):
        with pytest.raises(KeyFileError):
            keyfile.unseal(pem_of(body[:cut]), PASS)
    for cut in (10, len(sealed) // 2, len(sealed) - 10):
        with pytest.raises(KeyFileError):
            keyfile.unseal(sealed[:cut], PASS)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a key",
        b"-----BEGIN SAFESCAN ENCRYPTED PRIVATE KEY-----\n!!!!\n"
        b"-----END SAFESCAN ENCRYPTED PRIVATE KEY-----\n",
        b"-----BEGIN SAFESCAN ENCRYPTED PRIVATE KEY-----\nQUJD\n",  # no END line
        b"A" * 100_000,  # oversize
        b"\xff\xfe" * 50,
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(KeyFileError):
        keyfile.unseal(data, PASS)


def test_an_unencrypted_pkcs8_key_is_refused() -> None:
    clear = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError):
        keyfile.unseal(clear, PASS)
    with pytest.raises(KeyFileError):
        SigningKey.from_pem(clear, PASS)


def test_a_sealed_non_pkcs8_payload_is_refused() -> None:
    """A file sealed correctly (right passphrase) around bytes that are no key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    salt, nonce = b"s" * 16, b"n" * 12
    header = HEADER.pack(b"SSK1", 15, 8, 1, salt, nonce)
    key = Scrypt(salt=salt, length=32, n=1 << 15, r=8, p=1).derive(PASS)
    forged = header + AESGCM(key).encrypt(nonce, b"\x30\x03\x02\x01\x00", header)
    with pytest.raises(KeyFileError, match="not PKCS#8"):
        keyfile.unseal(pem_of(forged), PASS)


def test_legacy_pkcs8_files_still_load_and_saving_again_upgrades(tmp_path: Path) -> None:
    legacy = Ed25519PrivateKey.from_private_bytes(SEED).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASS),
    )
    assert keyfile.is_legacy(legacy)
    path = tmp_path / "old.key"
    path.write_bytes(legacy)
    key = SigningKey.load(path, PASS)
    assert key.public_key == SigningKey.from_seed(SEED).public_key
    with pytest.raises(KeyFileError):
        SigningKey.load(path, b"wrong passphrase")
    with pytest.raises(KeyFileError):
        SigningKey.load(path, b"")
    key.save(path, PASS)
    assert not keyfile.is_legacy(path.read_bytes())
    assert SigningKey.load(path, PASS).public_key == key.public_key


def test_the_key_type_is_checked_after_opening(tmp_path: Path) -> None:
    x_file = keyfile.seal(X25519PrivateKey.from_private_bytes(SEED), PASS)
    with pytest.raises(KeyFileError, match="Ed25519"):
        SigningKey.from_pem(x_file, PASS)
    SigningKey.from_seed(SEED).save(tmp_path / "ed.key", PASS)
    doc = SchemeKey.from_seed(1, SEED).to_json(PASS)
    ed_pem = (tmp_path / "ed.key").read_text()
    forged = json.loads(doc)
    forged["pem"] = ed_pem
    with pytest.raises(KeyFileError, match="X25519"):
        SchemeKey.from_json(json.dumps(forged), PASS)
