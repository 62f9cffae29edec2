"""Enrolling a key carrier: the wallet's side of attested enrollment.

GENERATE KEYS on the carrier (attested by the chip, over this enrollment's challenge) ->
``POST /v1/carriers/enroll`` (certificate, sealed bundle, first key update) -> the certificate
is checked (institution key, role, the carrier's own key) -> PERSONALIZE with the bundle and
the PIN -> a fresh session proves the certified key -> the first KEY UPDATE is delivered.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from safescan.api.encoding import b64d
from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CarrierError
from safescan.carrier.provision import personalize
from safescan.code.attestation import enrollment_challenge
from safescan.code.certs import Certificate, Role, TrustStore, verify_certificate
from safescan.remote import InstitutionHttp, fetch_trust
from safescan.wallet.enroll_checks import check_inputs
from safescan.wallet.errors import EnrollmentFailed
from safescan.wallet.store import WalletConfig


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
) -> WalletConfig:
    """Register a blank key carrier with an enrollment token and personalise it with ``pin``.

    GENERATE KEYS on the carrier -> ``POST /v1/carriers/enroll`` (certificate + sealed bundle)
    -> the certificate is checked (institution key, role, the carrier's own key) ->
    PERSONALIZE with the bundle and the PIN -> a fresh session proves the certified key.
    ``trust`` pins the institution keys; without it they are fetched (trust on first use).
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
    remote = InstitutionHttp(institution_url)
    try:
        pinned = trust or fetch_trust(remote)
        serial_box: list[int] = []
        customer_box: list[str] = []
        answer: dict[str, Any] = {}

        def make_bundle(keys: Any) -> bytes:
            doc = remote.call(
                "POST",
                "/v1/carriers/enroll",
                {
                    "token": token,
                    "signing_public_key": base64.b64encode(keys.signing_public.raw).decode(),
                    "transport_public_key": base64.b64encode(keys.transport_public).decode(),
                    # the carrier's proof that a genuine chip made these keys, for this token
                    "attestation": base64.b64encode(keys.statement.to_bytes()).decode(),
                },
            )
            answer.update(doc if isinstance(doc, dict) else {})
            try:
                cert = Certificate.from_bytes(b64d(str(doc["certificate"]), param="certificate"))
                bundle = b64d(str(doc["bundle"]), param="bundle", max_bytes=8192)
                serial = int(doc["carrier_serial"])
            except (KeyError, TypeError, ValueError):
                raise EnrollmentFailed("the institution's enrollment answer is malformed") from None
            verify_certificate(cert, pinned, role=Role.CARRIER, now=int(time.time()))
            if cert.public_key != keys.signing_public or cert.serial != serial:
                raise EnrollmentFailed("the institution certified another key than the carrier's")
            serial_box.append(serial)
            if isinstance(doc.get("customer_id"), str):
                customer_box.append(doc["customer_id"])
            return bundle

        try:
            with CarrierClient.connect(carrier_url) as carrier:
                personalize(
                    carrier, make_bundle, pin, retry_limit, challenge=enrollment_challenge(token)
                )
                info = carrier.open_session(pinned)
                first = answer.get("key_update")
                if first:  # the current scheme-key epochs, sealed to this carrier
                    carrier.key_update(b64d(str(first), param="key_update", max_bytes=4096))
        except CarrierError as exc:
            raise EnrollmentFailed(f"the key carrier: {exc.message}") from None
        if not serial_box or info.carrier_serial != serial_box[0]:
            raise EnrollmentFailed("the carrier did not take the institution's certificate")
        config = WalletConfig(
            institution_url=institution_url,
            carrier_url=carrier_url,
            trust=pinned,
            carrier_serial=serial_box[0],
            customer_id=customer_id or (customer_box[0] if customer_box else None),
            directory=directory,
        )
        config.save()
        return config
    finally:
        remote.close()
