"""The remembered certificate signatures (issue 20): a certificate's signature is verified once
per issuer key, and nothing else about it is remembered. Attacked after the real certificate
was verified (so it is remembered): revoked (by serial, by subject), expired, the wrong role,
another key under the same subject (re-using the signature, or signed by another institution
key with the same key id), tampered bytes at every position, another trust store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from safescan.code import certs
from safescan.code.certs import Certificate, Role, TrustStore, issue_certificate
from safescan.code.errors import CertificateError, SafescanError
from safescan.code.keys import SigningKey, VerifyKey
from safescan.code.payment import Merchant

NOW = 1_800_000_000
KID = 7
SHOP = Merchant("M1234567890", "Kiosk Nord", "Berlin", "DE", 5814)


def _issue(
    root: SigningKey, key: VerifyKey, *, subject: str = SHOP.id, serial: int = 41
) -> Certificate:
    return issue_certificate(
        root,
        KID,
        serial=serial,
        role=Role.MERCHANT,
        subject=subject,
        public_key=key,
        not_before=NOW - 60,
        not_after=NOW + 3600,
        merchant=replace(SHOP, id=subject),
    )


@pytest.fixture
def root() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def trust(root: SigningKey) -> TrustStore:
    return TrustStore({KID: root.public_key})


@pytest.fixture
def real(root: SigningKey, trust: TrustStore) -> Certificate:
    """The genuine certificate, verified once (so its signature is remembered)."""
    cert = _issue(root, SigningKey.generate().public_key)
    certs.verify_certificate(cert, trust, role=Role.MERCHANT, now=NOW)
    return cert


def _refused(
    cert: Certificate, trust: TrustStore, *, now: int = NOW, role: Role = Role.MERCHANT
) -> SafescanError:
    with pytest.raises(SafescanError) as caught:
        certs.verify_certificate(cert, trust, role=role, now=now)
    return caught.value


def test_a_verified_signature_is_not_verified_again(
    real: Certificate, trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    original = VerifyKey.verify

    def counting(
        self: VerifyKey, signature: bytes, message: bytes, *, what: str = "signature"
    ) -> None:
        calls.append(message)
        original(self, signature, message, what=what)

    monkeypatch.setattr(VerifyKey, "verify", counting)
    for _ in range(3):
        certs.verify_certificate(real, trust, role=Role.MERCHANT, now=NOW)
    assert calls == []
    other = _issue(SigningKey.generate(), SigningKey.generate().public_key)  # not remembered
    with pytest.raises(CertificateError):
        certs.verify_certificate(other, trust, role=Role.MERCHANT, now=NOW)
    assert len(calls) == 1


@pytest.mark.parametrize("by", ["serial", "subject", "both"])
def test_revoked_after_it_was_remembered_is_refused(
    real: Certificate, trust: TrustStore, by: str
) -> None:
    if by in ("serial", "both"):
        trust.revoked_serials = frozenset({real.serial})
    if by in ("subject", "both"):
        trust.revoked_subjects = frozenset({real.subject})
    assert "revoked" in _refused(real, trust).message


@pytest.mark.parametrize("now", [NOW + 3600, NOW + 10**6, NOW - 61])
def test_outside_its_validity_after_it_was_remembered_is_refused(
    real: Certificate, trust: TrustStore, now: int
) -> None:
    assert "not valid at this time" in _refused(real, trust, now=now).message


@pytest.mark.parametrize("role", [Role.CARRIER, Role.ATTESTATION])
def test_the_wrong_role_after_it_was_remembered_is_refused(
    real: Certificate, trust: TrustStore, role: Role
) -> None:
    assert "not a" in _refused(real, trust, role=role).message


def test_same_subject_another_key_with_the_remembered_signature_is_refused(
    real: Certificate, trust: TrustStore
) -> None:
    for serial in (real.serial, real.serial + 1):
        swapped = replace(real, public_key=SigningKey.generate().public_key, serial=serial)
        assert "does not verify" in _refused(swapped, trust).message


def test_same_subject_another_key_signed_by_an_untrusted_key_with_the_same_kid_is_refused(
    real: Certificate, trust: TrustStore
) -> None:
    rogue = SigningKey.generate()  # claims key id KID too
    for key in (SigningKey.generate().public_key, real.public_key):
        forged = _issue(rogue, key, serial=real.serial)
        assert forged.subject == real.subject
        assert "does not verify" in _refused(forged, trust).message


def test_remembered_under_one_trust_store_is_refused_by_another(
    real: Certificate, trust: TrustStore
) -> None:
    other_root = TrustStore({KID: SigningKey.generate().public_key})  # same kid, other key
    assert "does not verify" in _refused(real, other_root).message
    no_kid = TrustStore({KID + 1: trust.institution_keys[KID]})
    assert "not trusted" in _refused(real, no_kid).message


def test_every_tampered_byte_is_refused(real: Certificate, trust: TrustStore) -> None:
    """Each byte of the remembered certificate changed in turn (three ways): it fails to parse
    or fails to verify; none is accepted."""
    raw = real.to_bytes()
    accepted = []
    for i in range(len(raw)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = bytearray(raw)
            tampered[i] ^= flip
            try:
                cert = Certificate.from_bytes(bytes(tampered))
                certs.verify_certificate(cert, trust, role=Role.MERCHANT, now=NOW)
            except SafescanError:
                continue
            accepted.append((i, flip))
    assert accepted == []
    certs.verify_certificate(real, trust, role=Role.MERCHANT, now=NOW)  # the real one still is


def test_the_memory_is_bounded(
    root: SigningKey, trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certs, "_VERIFIED_MAX", 4)
    certs._VERIFIED.clear()
    for serial in range(10):
        cert = _issue(root, SigningKey.generate().public_key, serial=serial + 100)
        certs.verify_certificate(cert, trust, role=Role.MERCHANT, now=NOW)
        assert len(certs._VERIFIED) <= 4
