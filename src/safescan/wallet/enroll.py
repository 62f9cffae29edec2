"""Enrolling a key carrier: the wallet's side of attested enrollment.

GENERATE KEYS on the carrier (attested by the chip, over this enrollment's challenge) ->
``POST /v1/carriers/enroll`` (certificate, sealed bundle, first key update) -> the certificate
is checked (institution key, role, the carrier's own key) -> PERSONALIZE with the bundle and
the PIN -> a fresh session proves the certified key -> the first KEY UPDATE is delivered.

The carrier certificate is judged at trusted time (:func:`enrolment_floor`), as every later
payment judges it (``Wallet.trusted_now``): the latest of the device clock, the institution's
current revocation list's signed ``issued_at`` and the marks a ``trusted-time`` file already in
the wallet directory holds (:mod:`safescan.code.timefloor`). A device clock more than
:data:`~safescan.code.timefloor.CLOCK_TOLERANCE` behind a time the institution signed is
:class:`~safescan.wallet.errors.DeviceClockBehind` before the carrier is touched (before: the
device clock alone, so with the clock set back an expired carrier certificate was accepted).
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
from safescan.code import timefloor
from safescan.code.attestation import enrollment_challenge
from safescan.code.certs import Certificate, RevocationList, Role, TrustStore, verify_certificate
from safescan.code.errors import SafescanError
from safescan.wallet.crlcache import FLOOR_FILE
from safescan.wallet.enroll_checks import check_inputs
from safescan.wallet.errors import DeviceClockBehind, EnrollmentFailed
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
        try:
            fetched: bytes | None = api.revocations.signed()
        except SafescanError:  # no list to give: the marks the directory holds, if any
            fetched = None
        now = int(time.time())
        floor, judged = enrolment_floor(directory, pinned, fetched, now)
        at = floor.at(now)
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
            # at trusted time, not the device clock (a clock set back accepted an expired
            # certificate), and under the institution's current revocation list
            verify_certificate(cert, judged, role=Role.CARRIER, now=at)
            if cert.public_key != keys.signing_public or cert.serial != done.carrier_serial:
                raise EnrollmentFailed("the institution certified another key than the carrier's")
            answers.append(done)
            return done.bundle

        try:
            with CarrierClient.connect(carrier_url) as carrier:
                personalize(
                    carrier, make_bundle, pin, retry_limit, challenge=enrollment_challenge(token)
                )
                info = carrier.open_session(judged, now=at)
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
        # the signed time verified here is kept for the first payment (best effort: each
        # revocation check verifies and keeps it again)
        floor_path = directory / FLOOR_FILE
        if timefloor.worth_keeping(timefloor.load(floor_path)[0], floor):
            timefloor.save(floor_path, floor)
        return config
    finally:
        api.close()


def enrolment_floor(
    directory: Path, trust: TrustStore, fetched: bytes | None, now: int
) -> tuple[timefloor.TimeFloor, TrustStore]:
    """The marks of trusted time enrolment judges the carrier certificate by (the time:
    ``.at(now)``) and the pinned keys with the institution's revocation list applied.

    ``fetched``: the institution's current revocation list (``None``: it has none to give),
    verified under ``trust`` (:class:`EnrollmentFailed` when it does not verify); its signed
    ``issued_at`` and the marks kept in ``directory``'s ``trusted-time`` (a damaged file is
    ignored, as the wallet does: it is written again) raise the floor. A list newer than every
    signed time seen and current by the device clock puts back a device mark left by a clock
    once ahead (:func:`safescan.code.timefloor.advance`). :class:`DeviceClockBehind` when
    ``now`` is more than :data:`~safescan.code.timefloor.CLOCK_TOLERANCE` behind the newest
    signed time."""
    judged = TrustStore(dict(trust.institution_keys))
    crl: RevocationList | None = None
    if fetched is not None:
        try:
            crl = RevocationList.from_bytes(fetched, trust)
        except SafescanError as exc:
            raise EnrollmentFailed(
                f"the institution's revocation list does not verify ({exc.message}): someone"
                " may be between this wallet and the institution; nothing was done on the key"
                " carrier"
            ) from None
        judged.apply_revocations(crl)
    kept, _ = timefloor.load(directory / FLOOR_FILE)
    floor, _ = timefloor.advance(kept, now, [] if crl is None else [crl.issued_at], crl)
    if floor.behind(now) > timefloor.CLOCK_TOLERANCE:
        raise DeviceClockBehind(
            f"this device's clock reads {_utc(now)}, but the institution signed a time of"
            f" {_utc(floor.signed)}: the clock is behind (set back, or wrong), so the key"
            " carrier's certificate cannot be judged by it; set the clock right and enroll"
            " again (nothing was done on the key carrier, the token is still unused)"
        )
    return floor, judged


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
