"""Keys, certificates, revocation lists, provisioning bundles and the key directory."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.code import (
    Certificate,
    Merchant,
    ProvisioningBundle,
    RevocationList,
    Role,
    SchemeKey,
    SchemeKeyring,
    SigningKey,
    TrustStore,
    carrier_subject,
    cbor,
    issue_certificate,
    open_bundle,
    provisioning,
    seal_bundle,
    verify_certificate,
)
from safescan.code.errors import (
    CertificateError,
    CertificateExpired,
    CertificateRevoked,
    DecryptionFailed,
    KeyFileError,
    KeyRetired,
    MalformedProvisioning,
    OversizeInput,
    SafescanError,
    SignatureInvalid,
    UnknownKeyId,
)
from safescan.code.keys import parse_pinned_keys
from safescan.code.keystore import TRUST_FILE, KeyDirectory
from tests.code.conftest import NOW

PASS = b"correct horse battery staple"
SEED = bytes(range(1, 33))  # a recognisable private key, to look for in files

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def _pem_body(data: bytes) -> bytes:
    """The base64-decoded body of a PEM document."""
    lines = [line for line in data.decode("ascii").splitlines() if not line.startswith("-----")]
    return base64.b64decode("".join(lines))


# --- encrypted key storage ------------------------------------------------------------------


def test_signing_key_save_load_round_trip(tmp_path: Path) -> None:
    key = SigningKey.from_seed(SEED)
    path = tmp_path / "signing.key"
    key.save(path, PASS)
    loaded = SigningKey.load(path, PASS)
    assert loaded.public_key == key.public_key
    assert loaded.sign(b"msg") == key.sign(b"msg")  # Ed25519 is deterministic: same secret
    assert not (tmp_path / "signing.key.tmp").exists()


def test_scheme_key_save_load_round_trip(tmp_path: Path) -> None:
    key = SchemeKey.from_seed(7, SEED, retire_at=NOW + 5)
    path = tmp_path / "scheme.key"
    key.save(path, PASS)
    loaded = SchemeKey.load(path, PASS)
    assert (loaded.kid, loaded.retire_at) == (7, NOW + 5)
    assert loaded.public == key.public
    assert loaded.private_bytes() == SEED


def test_scheme_key_without_retirement_round_trip(tmp_path: Path) -> None:
    SchemeKey.from_seed(3, SEED).save(tmp_path / "s.key", PASS)
    assert SchemeKey.load(tmp_path / "s.key", PASS).retire_at is None


@pytest.mark.parametrize("kind", ["signing", "scheme"])
def test_key_file_is_owner_only(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "k.key"
    if kind == "signing":
        SigningKey.from_seed(SEED).save(path, PASS)
    else:
        SchemeKey.from_seed(1, SEED).save(path, PASS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_signing_key_file_never_holds_the_private_key(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    SigningKey.from_seed(SEED).save(path, PASS)
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN SAFESCAN ENCRYPTED PRIVATE KEY-----")
    assert SEED not in data and SEED.hex().encode() not in data
    assert SEED not in _pem_body(data)  # not in the DER inside the PEM either
    assert PASS not in data


def test_scheme_key_file_never_holds_the_private_key(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    SchemeKey.from_seed(1, SEED).save(path, PASS)
    data = path.read_bytes()
    doc = json.loads(data)
    assert doc["type"] == "safescan-scheme-key" and doc["kid"] == 1
    assert doc["pem"].startswith("-----BEGIN SAFESCAN ENCRYPTED PRIVATE KEY-----")
    assert SEED not in data and SEED.hex().encode() not in data
    assert SEED not in _pem_body(doc["pem"].encode())
    assert PASS not in data


def test_signing_key_wrong_passphrase_refused(tmp_path: Path) -> None:
    SigningKey.from_seed(SEED).save(tmp_path / "k.key", PASS)
    with pytest.raises(KeyFileError, match="passphrase"):
        SigningKey.load(tmp_path / "k.key", b"wrong")


def test_scheme_key_wrong_passphrase_refused(tmp_path: Path) -> None:
    SchemeKey.from_seed(1, SEED).save(tmp_path / "k.key", PASS)
    with pytest.raises(KeyFileError, match="passphrase"):
        SchemeKey.load(tmp_path / "k.key", b"wrong")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[: len(d) // 2],  # truncated
        lambda d: b"",  # empty
        lambda d: d[:100] + bytes([d[100] ^ 0x04]) + d[101:],  # one base64 char changed
        lambda d: b"not a key at all",
        lambda d: d.replace(b"PRIVATE KEY", b"PUBLIC KEY"),
    ],
)
def test_corrupt_signing_key_file_refused(tmp_path: Path, damage: object) -> None:
    path = tmp_path / "k.key"
    SigningKey.from_seed(SEED).save(path, PASS)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(KeyFileError):
        SigningKey.load(path, PASS)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[: len(d) // 2],
        lambda d: b"",
        lambda d: b"[]",
        lambda d: b'"text"',
        lambda d: d.replace(b"safescan-scheme-key", b"something-else"),
        lambda d: d.replace(b'"kid": 1', b'"kid": 300'),
        lambda d: d.replace(b'"kid": 1', b'"kid": "1"'),
        lambda d: d.replace(b'"retire_at": null', b'"retire_at": "soon"'),
        lambda d: d.replace(b"KEY-----\\nU1NL", b"KEY-----\\nU1NM", 1),  # damaged magic
        lambda d: d.replace(b"\\n-----END", b"A\\n-----END", 1),  # damaged sealed body
    ],
)
def test_corrupt_scheme_key_file_refused(tmp_path: Path, damage: object) -> None:
    path = tmp_path / "k.key"
    SchemeKey.from_seed(1, SEED).save(path, PASS)
    original = path.read_bytes()
    damaged = damage(original)  # type: ignore[operator]
    assert damaged != original
    path.write_bytes(damaged)
    with pytest.raises(KeyFileError):
        SchemeKey.load(path, PASS)


def test_missing_key_file_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        SigningKey.load(tmp_path / "absent.key", PASS)
    with pytest.raises(KeyFileError, match="cannot read"):
        SchemeKey.load(tmp_path / "absent.key", PASS)


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="passphrase is required"):
        SigningKey.from_seed(SEED).save(tmp_path / "a.key", b"")
    with pytest.raises(KeyFileError, match="passphrase is required"):
        SchemeKey.from_seed(1, SEED).save(tmp_path / "b.key", b"")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_scheme_key_file_loaded_as_signing_key_refused(tmp_path: Path) -> None:
    SchemeKey.from_seed(1, SEED).save(tmp_path / "scheme.key", PASS)
    with pytest.raises(KeyFileError):
        SigningKey.load(tmp_path / "scheme.key", PASS)


def test_x25519_pem_loaded_as_signing_key_refused() -> None:
    pem = X25519PrivateKey.from_private_bytes(SEED).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASS),
    )
    with pytest.raises(KeyFileError, match="Ed25519"):
        SigningKey.from_pem(pem, PASS)


def test_ed25519_pem_inside_scheme_key_file_refused() -> None:
    doc = {
        "type": "safescan-scheme-key",
        "kid": 1,
        "retire_at": None,
        "pem": SigningKey.from_seed(SEED).to_pem(PASS).decode(),
    }
    with pytest.raises(KeyFileError, match="X25519"):
        SchemeKey.from_json(json.dumps(doc), PASS)


@pytest.mark.parametrize("seed", [b"", b"\x01" * 31, b"\x01" * 33])
def test_bad_seed_lengths_refused(seed: bytes) -> None:
    with pytest.raises(KeyFileError):
        SigningKey.from_seed(seed)
    with pytest.raises(KeyFileError):
        SchemeKey.from_seed(1, seed)


@pytest.mark.parametrize("kid", [-1, 256, True, "1"])
def test_scheme_key_id_out_of_range_refused(kid: object) -> None:
    with pytest.raises(KeyFileError):
        SchemeKey.from_seed(kid, SEED)  # type: ignore[arg-type]


# --- scheme keyring rotation ----------------------------------------------------------------


def _ring(*keys: SchemeKey) -> SchemeKeyring:
    ring = SchemeKeyring()
    for key in keys:
        ring.add(key)
    return ring


def test_current_is_newest_active_key() -> None:
    ring = _ring(
        SchemeKey.generate(1, retire_at=NOW - 1),
        SchemeKey.generate(3, retire_at=NOW + 100),
        SchemeKey.generate(2),
    )
    assert ring.current(NOW).kid == 3
    assert ring.current(NOW + 100).kid == 2  # 3 retires: fall back to the newest active one


def test_current_without_active_key_refused() -> None:
    ring = _ring(SchemeKey.generate(1, retire_at=NOW))
    with pytest.raises(UnknownKeyId, match="no active"):
        ring.current(NOW)
    with pytest.raises(UnknownKeyId):
        SchemeKeyring().current(NOW)


def test_retired_key_refused_for_opening() -> None:
    key = SchemeKey.generate(1, retire_at=NOW)
    ring = _ring(key)
    assert ring.for_opening(1, NOW - 1) is key
    with pytest.raises(KeyRetired):
        ring.for_opening(1, NOW)


def test_unknown_key_id_refused_for_opening() -> None:
    with pytest.raises(UnknownKeyId):
        _ring(SchemeKey.generate(1)).for_opening(2, NOW)


def test_adding_a_key_with_the_same_id_replaces_it() -> None:
    first, second = SchemeKey.generate(1), SchemeKey.generate(1)
    ring = _ring(first, second)
    assert ring.for_opening(1, NOW) is second


# --- certificates ---------------------------------------------------------------------------

INSTITUTION = SigningKey.from_seed(b"\x11" * 32)
SUBJECT_KEY = SigningKey.from_seed(b"\x22" * 32)


def _trust() -> TrustStore:
    return TrustStore({1: INSTITUTION.public_key})


def _cert(**changes: object) -> Certificate:
    fields: dict[str, object] = dict(
        serial=1001,
        role=Role.MERCHANT,
        subject="m_7Qx2",
        public_key=SUBJECT_KEY.public_key,
        not_before=NOW - 86400,
        not_after=NOW + 86400,
    )
    issuer = changes.pop("issuer", INSTITUTION)
    kid = changes.pop("issuer_kid", 1)
    fields.update(changes)
    if fields["role"] is Role.MERCHANT and "merchant" not in fields:
        fields["merchant"] = Merchant(str(fields["subject"]), "Café Lumière", "Paris", "FR", 5814)
    return issue_certificate(issuer, kid, **fields)  # type: ignore[arg-type]


def test_certificate_round_trip() -> None:
    cert = _cert()
    data = cert.to_bytes()
    parsed = Certificate.from_bytes(data)
    assert parsed == cert
    assert parsed.to_bytes() == data
    verify_certificate(parsed, _trust(), role=Role.MERCHANT, now=NOW)


def test_certificate_size() -> None:
    # v1 (carrier): array(1) + version(1) + serial 1001(3) + role(1) + "carrier:4242"(13)
    # + key(2+32) + not_before(5) + not_after(5) + issuer kid(1) + signature(2+64) = 130 bytes
    assert len(_cert(role=Role.CARRIER, subject=carrier_subject(4242)).to_bytes()) == 130
    longest = _cert(role=Role.CARRIER, serial=2**64 - 1, subject="x" * 64, issuer_kid=0xFFFF)
    assert len(longest.to_bytes()) <= 200
    # v2 (merchant) adds the identity: "Café Lumière"(1+14) + "Paris"(6) + "FR"(3) + 5814(3)
    assert len(_cert().to_bytes()) == 124 + 27
    widest = Merchant("x" * 40, "\U0001f600" * 64, "\U0001f600" * 64, "FR", 9999)
    huge = _cert(serial=2**64 - 1, subject="x" * 40, issuer_kid=0xFFFF, merchant=widest)
    assert len(huge.to_bytes()) <= 768
    assert Certificate.from_bytes(huge.to_bytes()) == huge


def test_certificate_every_tampered_byte_refused() -> None:
    data = _cert().to_bytes()
    for position in range(len(data)):
        for flip in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[position] ^= flip
            with pytest.raises((CertificateError, UnknownKeyId)):
                cert = Certificate.from_bytes(bytes(tampered))
                verify_certificate(cert, _trust(), role=Role.MERCHANT, now=NOW)


def test_certificate_signed_by_another_key_refused() -> None:
    forged = _cert(issuer=SigningKey.from_seed(b"\x33" * 32))
    with pytest.raises(CertificateError, match="does not verify"):
        verify_certificate(forged, _trust(), role=Role.MERCHANT, now=NOW)


def test_certificate_wrong_role_refused() -> None:
    with pytest.raises(CertificateError, match="not a carrier") as info:
        verify_certificate(_cert(), _trust(), role=Role.CARRIER, now=NOW)
    assert type(info.value) is CertificateError
    carrier = _cert(role=Role.CARRIER, subject=carrier_subject(5))
    with pytest.raises(CertificateError, match="not a merchant"):
        verify_certificate(carrier, _trust(), role=Role.MERCHANT, now=NOW)


def test_certificate_validity_boundaries() -> None:
    cert = _cert(not_before=NOW, not_after=NOW + 10)
    verify_certificate(cert, _trust(), role=Role.MERCHANT, now=NOW)
    verify_certificate(cert, _trust(), role=Role.MERCHANT, now=NOW + 9)
    with pytest.raises(CertificateExpired):
        verify_certificate(cert, _trust(), role=Role.MERCHANT, now=NOW + 10)  # expired
    with pytest.raises(CertificateExpired):
        verify_certificate(cert, _trust(), role=Role.MERCHANT, now=NOW - 1)  # not yet valid


def test_certificate_revoked_refused() -> None:
    trust = _trust()
    trust.revoked_serials = frozenset({1001})
    with pytest.raises(CertificateRevoked, match="1001"):
        verify_certificate(_cert(), trust, role=Role.MERCHANT, now=NOW)
    verify_certificate(_cert(serial=1002), trust, role=Role.MERCHANT, now=NOW)


def test_certificate_unknown_issuer_kid_refused() -> None:
    with pytest.raises(UnknownKeyId):
        verify_certificate(_cert(issuer_kid=9), _trust(), role=Role.MERCHANT, now=NOW)


def _cert_fields() -> list[object]:
    value = cbor.strict_loads(_cert().to_bytes(), error=CertificateError)
    assert isinstance(value, list) and len(value) == 13  # version 2: a merchant certificate
    return value


def test_certificate_trailing_bytes_refused() -> None:
    with pytest.raises(CertificateError, match="deterministic"):
        Certificate.from_bytes(_cert().to_bytes() + b"\x00")


def test_certificate_non_canonical_integer_refused() -> None:
    data = _cert().to_bytes()
    short = cbor.dumps(1001)  # 0x19 0x03 0xe9
    assert data[2:5] == short
    long_form = b"\x1a\x00\x00\x03\xe9"  # the same 1001 in four bytes
    with pytest.raises(CertificateError, match="deterministic"):
        Certificate.from_bytes(data[:2] + long_form + data[5:])


def test_certificate_indefinite_array_refused() -> None:
    data = _cert().to_bytes()
    with pytest.raises(CertificateError):
        Certificate.from_bytes(b"\x9f" + data[1:] + b"\xff")


def test_certificate_oversize_refused() -> None:
    with pytest.raises(CertificateError, match="too large"):
        Certificate.from_bytes(b"\x00" * 769)


@pytest.mark.parametrize(
    ("index", "bad", "message"),
    [
        (0, 3, "version"),
        (0, 1, "wrong length"),
        (1, -1, "serial"),
        (1, "1001", "serial"),
        (2, 4, "role"),  # 1 merchant, 2 carrier, 3 attestation
        (2, 0, "role"),
        (3, "", "subject"),
        (3, "x" * 65, "subject"),
        (3, b"m_7Qx2", "subject"),
        (3, "Café", "ASCII"),
        (3, "bell\x07", "ASCII"),
        (4, b"\x00" * 31, "public key"),
        (5, -5, "not_before"),
        (6, NOW - 86400, "empty"),  # not_after == not_before
        (7, 0x10000, "issuer_kid"),
        (8, "", "identity"),
        (9, "Paris\u202e", "identity"),
        (10, "France", "identity"),
        (11, -1, "identity"),
        (12, b"\x00" * 63, "signature"),
    ],
)
def test_certificate_bad_field_refused(index: int, bad: object, message: str) -> None:
    value = _cert_fields()
    value[index] = bad
    with pytest.raises(CertificateError, match=message):
        Certificate.from_bytes(cbor.dumps(value))


@pytest.mark.parametrize("length", [8, 9, 10, 12, 14])
def test_certificate_wrong_arity_refused(length: int) -> None:
    value = [*_cert_fields(), 0][:length]
    with pytest.raises(CertificateError, match="wrong length"):
        Certificate.from_bytes(cbor.dumps(value))


@pytest.mark.parametrize("subject", ["Café", "m\u200b1", "", "a" * 65, "tab\there"])
def test_certificate_bad_subject_never_issued(subject: str) -> None:
    with pytest.raises(CertificateError):
        _cert(subject=subject)


# --- revocation lists -----------------------------------------------------------------------


def _crl(sequence: int = 5, serials: set[int] | None = None, **kw: object) -> RevocationList:
    issuer = kw.pop("issuer", INSTITUTION)
    return RevocationList.issue(
        issuer,  # type: ignore[arg-type]
        int(kw.pop("kid", 1)),  # type: ignore[call-overload]
        sequence=sequence,
        issued_at=NOW,
        serials={1001, 7, 2**40} if serials is None else serials,
    )


def test_revocation_list_round_trip() -> None:
    crl = _crl()
    data = crl.to_bytes()
    parsed = RevocationList.from_bytes(data, _trust())
    assert parsed == crl
    assert parsed.serials == frozenset({7, 1001, 2**40})
    assert parsed.to_bytes() == data


def test_revocation_list_forged_signature_refused() -> None:
    forged = _crl(issuer=SigningKey.from_seed(b"\x44" * 32))
    with pytest.raises(SignatureInvalid):
        RevocationList.from_bytes(forged.to_bytes(), _trust())


def test_revocation_list_unknown_issuer_refused() -> None:
    with pytest.raises(UnknownKeyId):
        RevocationList.from_bytes(_crl(kid=4).to_bytes(), _trust())


def test_revocation_list_removed_serial_refused() -> None:
    # Un-revoking a merchant by editing the list must break the signature.
    crl = _crl()
    edited = dataclasses.replace(crl, serials=frozenset({7, 2**40}))
    with pytest.raises(SignatureInvalid):
        RevocationList.from_bytes(edited.to_bytes(), _trust())


def test_revocation_list_every_tampered_byte_refused() -> None:
    data = _crl().to_bytes()
    for position in range(len(data)):
        tampered = bytearray(data)
        tampered[position] ^= 0x01
        with pytest.raises(SafescanError):
            RevocationList.from_bytes(bytes(tampered), _trust())


@pytest.mark.parametrize(
    "value",
    [
        [1, 5, NOW, [7, 3], 1, b"\x00" * 64],  # unsorted
        [1, 5, NOW, [3, 3], 1, b"\x00" * 64],  # duplicate
        [2, 5, NOW, [3], 1, b"\x00" * 64],  # version
        [1, 5, NOW, [3], 1],  # arity
        [1, -5, NOW, [3], 1, b"\x00" * 64],  # negative sequence
        [1, 5, NOW, {1: 3}, 1, b"\x00" * 64],  # serials not an array
    ],
)
def test_revocation_list_malformed_refused(value: list[object]) -> None:
    with pytest.raises(CertificateError):
        RevocationList.from_bytes(cbor.dumps(value), _trust())


@pytest.mark.parametrize("serials", [[[1]], [1, b"a"], [{1: 2}]])
def test_revocation_list_serials_of_wrong_type_refused(serials: list[object]) -> None:
    with pytest.raises(CertificateError):
        RevocationList.from_bytes(cbor.dumps([1, 5, NOW, serials, 1, b"\x00" * 64]), _trust())


def test_apply_revocations_and_rollback_refused() -> None:
    trust = _trust()
    trust.apply_revocations(RevocationList.from_bytes(_crl(5).to_bytes(), trust))
    assert (trust.crl_sequence, trust.revoked_serials) == (5, frozenset({7, 1001, 2**40}))
    with pytest.raises(CertificateRevoked):
        verify_certificate(_cert(), trust, role=Role.MERCHANT, now=NOW)
    for stale in (5, 4, 0):  # equal or older: a rollback that would un-revoke 1001
        with pytest.raises(CertificateError, match="not newer"):
            trust.apply_revocations(_crl(stale, serials=set()))
        assert (trust.crl_sequence, trust.revoked_serials) == (5, frozenset({7, 1001, 2**40}))
    trust.apply_revocations(_crl(6, serials={9}))
    assert (trust.crl_sequence, trust.revoked_serials) == (6, frozenset({9}))
    verify_certificate(_cert(), trust, role=Role.MERCHANT, now=NOW)


# --- provisioning bundles -------------------------------------------------------------------

CARRIER_SERIAL = 4242


@dataclasses.dataclass
class Carrier:
    signing: SigningKey
    transport: X25519PrivateKey

    @property
    def transport_public(self) -> bytes:
        return self.transport.public_key().public_bytes_raw()


def _carrier(n: int = 1) -> Carrier:
    return Carrier(
        SigningKey.from_seed(bytes([0x60 + n]) * 32),
        X25519PrivateKey.from_private_bytes(bytes([0x70 + n]) * 32),
    )


def _bundle(carrier: Carrier, **changes: object) -> ProvisioningBundle:
    cert = _cert(
        serial=77,
        role=changes.pop("role", Role.CARRIER),
        subject=carrier_subject(CARRIER_SERIAL),
        public_key=changes.pop("cert_key", carrier.signing.public_key),
        not_before=NOW - 10,
        not_after=NOW + 10**6,
    )
    fields: dict[str, object] = dict(
        carrier_serial=CARRIER_SERIAL,
        certificate=cert,
        institution_keys={1: INSTITUTION.public_key},
        scheme_keys=(
            SchemeKey.from_seed(2, b"\x02" * 32),
            SchemeKey.from_seed(1, b"\x01" * 32, retire_at=NOW + 3600),
        ),
        issued_at=NOW,
        transport_public=carrier.transport_public,
    )
    fields.update(changes)
    return ProvisioningBundle(**fields)  # type: ignore[arg-type]


def _open(data: bytes, carrier: Carrier) -> ProvisioningBundle:
    return open_bundle(
        data, carrier.transport, carrier_signing_key=carrier.signing.public_key, now=NOW
    )


def test_bundle_round_trip() -> None:
    carrier = _carrier()
    bundle = _bundle(carrier)
    opened = _open(seal_bundle(bundle, INSTITUTION, 1), carrier)
    assert opened.carrier_serial == CARRIER_SERIAL
    assert opened.certificate == bundle.certificate
    assert opened.institution_keys == {1: INSTITUTION.public_key}
    assert opened.issued_at == NOW and opened.transport_public == carrier.transport_public
    got = {(k.kid, k.private_bytes(), k.retire_at) for k in opened.scheme_keys}
    assert got == {(1, b"\x01" * 32, NOW + 3600), (2, b"\x02" * 32, None)}
    assert opened.trust_store().institution_key(1) == INSTITUTION.public_key


def test_bundle_hides_the_scheme_keys() -> None:
    carrier = _carrier()
    sealed = seal_bundle(_bundle(carrier), INSTITUTION, 1)
    assert b"\x01" * 32 not in sealed and b"\x02" * 32 not in sealed
    assert b"carrier:" not in sealed


def test_bundle_every_altered_byte_refused() -> None:
    carrier = _carrier()
    sealed = seal_bundle(_bundle(carrier), INSTITUTION, 1)
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= 0x20
        with pytest.raises(DecryptionFailed):
            _open(bytes(altered), carrier)
    for cut in (0, 31, 32, len(sealed) - 1):
        with pytest.raises(DecryptionFailed):
            _open(sealed[:cut], carrier)


def test_bundle_oversize_refused() -> None:
    with pytest.raises(OversizeInput):
        _open(b"\x00" * 4097, _carrier())


def test_bundle_for_another_carrier_refused() -> None:
    mine, other = _carrier(1), _carrier(2)
    sealed = seal_bundle(_bundle(other), INSTITUTION, 1)
    with pytest.raises(DecryptionFailed):
        _open(sealed, mine)


def test_bundle_naming_another_transport_key_refused() -> None:
    # The relay re-seals another carrier's (authentic, signed) bundle to this carrier.
    mine, other = _carrier(1), _carrier(2)
    sealed_for_other = seal_bundle(_bundle(other, cert_key=mine.signing.public_key), INSTITUTION, 1)
    plaintext = _SUITE.decrypt(sealed_for_other, other.transport, info=provisioning.PROV_INFO)
    resealed = _SUITE.encrypt(plaintext, mine.transport.public_key(), info=provisioning.PROV_INFO)
    with pytest.raises(MalformedProvisioning, match="another carrier"):
        _open(resealed, mine)


def test_bundle_certificate_for_another_signing_key_refused() -> None:
    carrier = _carrier()
    bundle = _bundle(carrier, cert_key=_carrier(2).signing.public_key)
    with pytest.raises(MalformedProvisioning, match="not for this carrier"):
        _open(seal_bundle(bundle, INSTITUTION, 1), carrier)


def test_bundle_signed_by_unlisted_key_refused() -> None:
    carrier = _carrier()
    with pytest.raises(UnknownKeyId):
        _open(seal_bundle(_bundle(carrier), INSTITUTION, 9), carrier)


def test_bundle_signed_by_wrong_key_refused() -> None:
    carrier = _carrier()
    rogue = SigningKey.from_seed(b"\x55" * 32)
    with pytest.raises(SignatureInvalid):
        _open(seal_bundle(_bundle(carrier), rogue, 1), carrier)


def test_bundle_with_merchant_certificate_refused() -> None:
    carrier = _carrier()
    with pytest.raises(CertificateError, match="not a carrier"):
        _open(seal_bundle(_bundle(carrier, role=Role.MERCHANT), INSTITUTION, 1), carrier)


def test_bundle_serial_not_matching_certificate_refused() -> None:
    carrier = _carrier()
    with pytest.raises(MalformedProvisioning, match="serial"):
        _open(seal_bundle(_bundle(carrier, carrier_serial=1), INSTITUTION, 1), carrier)


def _seal_signed(carrier: Carrier, signed: bytes, key: SigningKey = INSTITUTION) -> bytes:
    plaintext = key.sign(provisioning.PROV_CONTEXT + signed) + signed
    return _SUITE.encrypt(plaintext, carrier.transport.public_key(), info=provisioning.PROV_INFO)


@pytest.mark.parametrize(
    ("signed", "error"),
    [
        ([1, [1, 2, 3]], MalformedProvisioning),  # wrong inner arity
        ([1, 5], MalformedProvisioning),
        ({1: 2}, MalformedProvisioning),
        ([1, [CARRIER_SERIAL, b"", 7, [], NOW, b"\x00" * 32]], MalformedProvisioning),
        ([1, [CARRIER_SERIAL, b"", [], [[1, 5, 0]], NOW, b"\x00" * 32]], MalformedProvisioning),
        # a 5-byte institution key: refused by VerifyKey (KeyFileError, a typed error too)
        ([1, [CARRIER_SERIAL, b"", [[1, b"\x00" * 5]], [], NOW, b"\x00" * 32]], KeyFileError),
    ],
)
def test_bundle_of_wrong_shape_refused(signed: object, error: type[SafescanError]) -> None:
    carrier = _carrier()
    with pytest.raises(error):
        _open(_seal_signed(carrier, cbor.dumps(signed)), carrier)


def test_bundle_issuer_kid_of_wrong_type_refused() -> None:
    carrier = _carrier()
    signed = cbor.dumps([[1], [CARRIER_SERIAL, b"", [], [], NOW, carrier.transport_public]])
    with pytest.raises(MalformedProvisioning):
        _open(_seal_signed(carrier, signed), carrier)


# --- key directory --------------------------------------------------------------------------


def test_key_directory_create_and_load(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    created = KeyDirectory.create(directory, PASS, kid=3)
    assert sorted(p.name for p in directory.iterdir()) == [
        "institution-3.key",
        "scheme-3.key",
        TRUST_FILE,
    ]
    for name in ("institution-3.key", "scheme-3.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    loaded = KeyDirectory.load(directory)
    assert loaded.trust.institution_keys == created.trust.institution_keys
    assert loaded.scheme_public == created.scheme_public
    ik = loaded.institution_key(3, PASS)
    assert loaded.trust.institution_key(3) == ik.public_key
    ring = loaded.keyring(PASS)
    assert ring.current(NOW).public == loaded.scheme_public[3]


def test_key_directory_refuses_to_overwrite(tmp_path: Path) -> None:
    KeyDirectory.create(tmp_path, PASS)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        KeyDirectory.create(tmp_path, PASS)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_key_directory_wrong_passphrase_refused(tmp_path: Path) -> None:
    directory = KeyDirectory.create(tmp_path, PASS)
    with pytest.raises(KeyFileError):
        directory.keyring(b"wrong")
    with pytest.raises(KeyFileError):
        directory.institution_key(1, b"wrong")


def test_key_directory_without_scheme_keys_refused(tmp_path: Path) -> None:
    directory = KeyDirectory.create(tmp_path, PASS)
    (tmp_path / "scheme-1.key").unlink()
    with pytest.raises(KeyFileError, match="no scheme keys"):
        directory.keyring(PASS)


@pytest.mark.parametrize(
    "content",
    ["", "[]", '{"type": "other"}', '{"type": "safescan-trust"}', "not json"],
)
def test_key_directory_corrupt_trust_file_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / TRUST_FILE).write_text(content)
    with pytest.raises(KeyFileError):
        KeyDirectory.load(tmp_path)


def test_key_directory_missing_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        KeyDirectory.load(tmp_path / "absent")


def test_pinned_institution_keys_parse_and_refuse_malformed_pins() -> None:
    key = SigningKey.generate().public_key
    pins = parse_pinned_keys([f"1:{key.hex()}", f" 7:{key.hex().upper()}\n"])
    assert pins == {1: key, 7: key}
    for bad in (
        "",
        key.hex(),  # no key id
        f"x:{key.hex()}",
        f"\u0661:{key.hex()}",  # an Arabic-Indic digit one
        f"-1:{key.hex()}",
        f"{2**32}:{key.hex()}",
        f"1:{key.hex()[:-2]}",  # 31 bytes
        f"1:{key.hex()}00",  # 33 bytes
        f"1:{key.hex()[:-1]}g",  # not hex
    ):
        with pytest.raises(KeyFileError, match="KID:64-hex-digits"):
            parse_pinned_keys([bad])
