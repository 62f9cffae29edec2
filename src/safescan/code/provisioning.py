"""Key-carrier provisioning bundles: what the institution loads into a carrier, end to end.

At personalisation the carrier generates its keys on the device (they never leave it) and
exports two public keys: its Ed25519 signing key (which the institution certifies) and an X25519
transport key. The institution answers with a bundle that it **signs** (Ed25519) and **seals**
(HPKE) to that transport key, so the phone relaying it can neither read the scheme keys inside
nor alter anything::

    binary    = HPKE-seal(transport_pub, info="safescan provisioning v1", plaintext)
    plaintext = signature(64) || signed
    signed    = CBOR [issuer_kid, [carrier_serial, certificate(bstr), institution_keys,
                                   scheme_keys, issued_at, transport_pub(32)]]
    institution_keys = [[kid, ed25519_pub(32)], ...]
    scheme_keys      = [[kid, x25519_private(32), retire_at (0 = none)], ...]
    signature = Ed25519 over "SS1-PROV" || signed, by institution key ``issuer_kid``

The carrier accepts a bundle only while BLANK, checks that the signature verifies under the
institution root key it was manufactured with (its trust anchor; see :func:`open_bundle`),
that the certificate is for the carrier's own
signing key and serial, and that the transport key is its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from safescan.code import cbor
from safescan.code.certs import Certificate, Role, TrustStore, verify_certificate
from safescan.code.errors import DecryptionFailed, MalformedProvisioning, OversizeInput
from safescan.code.keys import SchemeKey, Signer, VerifyKey
from safescan.code.pubkeys import check_x25519_public

PROV_CONTEXT = b"SS1-PROV"
PROV_INFO = b"safescan provisioning v1"
MAX_BUNDLE_BYTES = 4096
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


@dataclass(frozen=True)
class ProvisioningBundle:
    """Everything a carrier needs: its certificate, trust anchors and scheme keys."""

    carrier_serial: int
    certificate: Certificate
    institution_keys: dict[int, VerifyKey]
    scheme_keys: tuple[SchemeKey, ...]
    issued_at: int
    transport_public: bytes

    def trust_store(self) -> TrustStore:
        """A trust store of the institution keys in the bundle."""
        return TrustStore(dict(self.institution_keys))


def seal_bundle(bundle: ProvisioningBundle, issuer: Signer, issuer_kid: int) -> bytes:
    """Sign the bundle with the institution key and seal it to the carrier's transport key."""
    signed = cbor.dumps(
        [
            issuer_kid,
            [
                bundle.carrier_serial,
                bundle.certificate.to_bytes(),
                [[kid, key.raw] for kid, key in sorted(bundle.institution_keys.items())],
                [
                    [k.kid, k.private_bytes(), k.retire_at or 0]
                    for k in sorted(bundle.scheme_keys, key=lambda k: k.kid)
                ],
                bundle.issued_at,
                bundle.transport_public,
            ],
        ]
    )
    plaintext = issuer.sign(PROV_CONTEXT + signed) + signed
    check_x25519_public(bundle.transport_public, what="the carrier's transport key")
    recipient = X25519PublicKey.from_public_bytes(bundle.transport_public)
    return _SUITE.encrypt(plaintext, recipient, info=PROV_INFO)


def open_bundle(
    data: bytes,
    transport_key: X25519PrivateKey,
    *,
    carrier_signing_key: VerifyKey,
    now: int,
    trust_anchor: TrustStore | None = None,
) -> ProvisioningBundle:
    """Open and verify a bundle inside the carrier. Raises typed errors on any problem.

    ``trust_anchor`` holds the institution root key(s) the carrier was manufactured with. With
    it, a relay that knows the carrier's public transport key cannot substitute a bundle of its
    own; without it the carrier trusts the first bundle it gets (acceptable only when the
    personalisation path itself is trusted, e.g. at the institution's own desk).
    """
    if not isinstance(data, bytes) or len(data) > MAX_BUNDLE_BYTES:
        raise OversizeInput("provisioning bundle is too large")
    try:
        plaintext = _SUITE.decrypt(data, transport_key, info=PROV_INFO)
    except (InvalidTag, ValueError):
        raise DecryptionFailed("provisioning bundle is altered or not for this carrier") from None
    signature, signed = plaintext[:64], plaintext[64:]
    value = cbor.strict_loads(signed, error=MalformedProvisioning)
    try:
        issuer_kid, (serial, cert_bytes, ikeys, skeys, issued_at, transport_pub) = value
        if not all(isinstance(k, int) and not isinstance(k, bool) for k, _ in ikeys):
            raise MalformedProvisioning("institution key ids must be integers")
        if isinstance(issuer_kid, bool) or not isinstance(issuer_kid, int):
            raise MalformedProvisioning("the bundle's issuer key id must be an integer")
        institution_keys = {k: VerifyKey(raw) for k, raw in ikeys}
        scheme_keys = tuple(
            SchemeKey.from_seed(kid, raw, retire_at or None) for kid, raw, retire_at in skeys
        )
    except (TypeError, ValueError) as exc:
        raise MalformedProvisioning(f"provisioning bundle has the wrong shape ({exc})") from None
    if trust_anchor is not None:
        # The carrier was manufactured knowing the institution's root key: only a bundle
        # signed under it is accepted, and the bundle may not replace that key.
        anchor_key = trust_anchor.institution_key(issuer_kid)
        if institution_keys.get(issuer_kid) != anchor_key:
            raise MalformedProvisioning(
                "the bundle does not carry the institution key it was built for"
            )
    trust = TrustStore(institution_keys)
    trust.institution_key(issuer_kid).verify(
        signature, PROV_CONTEXT + signed, what="provisioning bundle signature"
    )
    cert = Certificate.from_bytes(cert_bytes)
    verify_certificate(cert, trust, role=Role.CARRIER, now=now)
    if cert.public_key != carrier_signing_key:
        raise MalformedProvisioning("the certificate in the bundle is not for this carrier's key")
    if not isinstance(serial, int) or cert.subject != carrier_subject(serial):
        raise MalformedProvisioning("the bundle's carrier serial does not match its certificate")
    own = transport_key.public_key().public_bytes_raw()
    if transport_pub != own:
        raise MalformedProvisioning("the bundle was made for another carrier")
    if not isinstance(issued_at, int):
        raise MalformedProvisioning("the bundle's issue time must be an integer")
    return ProvisioningBundle(serial, cert, institution_keys, scheme_keys, issued_at, own)


def carrier_subject(serial: int) -> str:
    """The certificate subject for the carrier with this serial."""
    return f"carrier:{serial}"
