"""Enrolling a key carrier: the wallet's side of attested enrollment.

GENERATE KEYS on the carrier (attested by the chip, over this enrollment's challenge) ->
``POST /v1/carriers/enroll`` (certificate, sealed bundle, first key update) -> the certificate
is checked (institution key, role, the carrier's own key) -> PERSONALIZE with the bundle and
the PIN -> a fresh session proves the certified key -> the first KEY UPDATE is delivered.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CarrierError
from safescan.carrier.provision import personalize
from safescan.client.errors import InstitutionProtocolError
from safescan.client.wallet import CarrierKeys, Enrolled, WalletClient
from safescan.code.attestation import enrollment_challenge
from safescan.code.certs import Certificate, Role, TrustStore, verify_certificate
from safescan.wallet.enroll_checks import check_inputs
from safescan.wallet.errors import EnrollmentFailed
from safescan.wallet.store import WalletConfig
from safescan.web.pki import ca_from_pem, pin_ca


def enroll(
    *,
    directory: Path,
    institution_url: str,
    carrier_url: str,
    token: str,
    pin: str,
    retry_limit: int = 5,
    customer_id: str | None = None,
    trust: TrustStore | None = None,
    tls_ca: str | None = None,
) -> WalletConfig:
    """Register a blank key carrier with an enrollment token and personalise it with ``pin``.

    GENERATE KEYS on the carrier -> ``POST /v1/carriers/enroll`` (certificate + sealed bundle)
    -> the certificate is checked (institution key, role, the carrier's own key) ->
    PERSONALIZE with the bundle and the PIN -> a fresh session proves the certified key.
    ``trust`` pins the institution keys; without it they are fetched (trust on first use);
    either way the institution is asked for its keys before the carrier is touched.
    ``tls_ca`` (PEM) pins the CA of the institution's HTTPS certificate, from now on.
    Every local input is checked first (:func:`.enroll_checks.check_inputs`).
    """
    check_inputs(
        directory=directory,
        institution_url=institution_url,
        carrier_url=carrier_url,
        token=token,
        pin=pin,
        retry_limit=retry_limit,
        customer_id=customer_id,
    )
    if tls_ca is not None:
        pin_ca(institution_url, ca_from_pem(tls_ca, "the institution's CA"))
    api = WalletClient(institution_url)
    try:
        # one institution request before the carrier is touched, pinned keys or not: an
        # unreachable institution, a TLS certificate the pinned CA refuses or a pinned key the
        # institution does not publish fails here, before GENERATE KEYS spends the carrier's
        # key generation (and the enrollment's attestation) on an enrollment that cannot finish
        published = api.keys.root_keys()
        pinned = trust or published
        if trust is not None and not any(
            published.institution_keys.get(kid) == key
            for kid, key in trust.institution_keys.items()
        ):
            raise EnrollmentFailed(
                "the institution does not publish the pinned institution key (--institution-key):"
                " nothing was done on the key carrier"
            )
        answers: list[Enrolled] = []

        def make_bundle(keys: Any) -> bytes:
            try:
                done = api.carriers.enroll(
                    token,
                    CarrierKeys(
                        signing_public_key=keys.signing_public.raw,
                        transport_public_key=keys.transport_public,
                        # the carrier's proof that a genuine chip made these keys, for this token
                        attestation=keys.statement.to_bytes(),
                    ),
                )
            except InstitutionProtocolError:
                raise EnrollmentFailed("the institution's enrollment answer is malformed") from None
            cert = Certificate.from_bytes(done.certificate)
            verify_certificate(cert, pinned, role=Role.CARRIER, now=int(time.time()))
            if cert.public_key != keys.signing_public or cert.serial != done.carrier_serial:
                raise EnrollmentFailed("the institution certified another key than the carrier's")
            answers.append(done)
            return done.bundle

        try:
            with CarrierClient.connect(carrier_url) as carrier:
                personalize(
                    carrier, make_bundle, pin, retry_limit, challenge=enrollment_challenge(token)
                )
                info = carrier.open_session(pinned)
                first = answers[0].key_update if answers else None
                if first:  # the current scheme-key epochs, sealed to this carrier
                    carrier.key_update(first)
        except CarrierError as exc:
            raise EnrollmentFailed(f"the key carrier: {exc.message}") from None
        if not answers or info.carrier_serial != answers[0].carrier_serial:
            raise EnrollmentFailed("the carrier did not take the institution's certificate")
        config = WalletConfig(
            institution_url=institution_url,
            carrier_url=carrier_url,
            trust=pinned,
            carrier_serial=answers[0].carrier_serial,
            customer_id=customer_id or answers[0].customer_id,
            directory=directory,
            tls_ca=tls_ca,
        )
        config.save()
        return config
    finally:
        api.close()
