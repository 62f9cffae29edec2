"""HTTP routes of the carrier lifecycle: attested enrollment, key updates, epochs (admin).

Registered on the app by :func:`register_carrier_routes` (called from :func:`.api.create_app`);
the decisions are in :mod:`.enrollment` and :mod:`.epochs`.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from safescan.api.encoding import b64d, b64e
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution
from safescan.institution.util import key32

KeyText = Annotated[str, Field(min_length=40, max_length=88, pattern=r"^[A-Za-z0-9+/=_\-]+$")]
Serial = Annotated[int, Path(ge=1, le=2**31 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Enrollment(_Strict):
    """A wallet enrolls its key carrier: the keys it generated and its attestation of them."""

    token: Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]
    signing_public_key: KeyText
    transport_public_key: KeyText
    # base64 CBOR (safescan.code.attestation); required, but an absent one is refused by the
    # service with a clear 403 attestation_refused rather than a schema error
    attestation: (
        Annotated[str, Field(min_length=1, max_length=1400, pattern=r"^[A-Za-z0-9+/=_\-]+$")] | None
    ) = None


class KeyUpdateRequest(_Strict):
    """A wallet asks for its carrier's scheme keys newer than the epoch the carrier holds."""

    from_epoch: Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)]  # JSON integers only


def register_carrier_routes(
    app: FastAPI, inst: Institution, admin: Any, limiter: RateLimiter
) -> None:
    """Add the carrier-lifecycle routes; ``admin`` is the administrator dependency type,
    ``limiter`` the per-client-address limit of public endpoints."""

    @app.post("/v1/carriers/enroll", status_code=201, tags=["wallet"])
    def enroll(body: Enrollment) -> dict[str, Any]:
        """Register an attested key carrier: certificate, sealed provisioning bundle and the
        first sealed key update (403 ``attestation_refused`` without a valid attestation)."""
        attestation = (
            b64d(body.attestation, param="attestation", max_bytes=1024)
            if body.attestation is not None
            else None
        )
        return inst.enroll_carrier(
            body.token,
            key32(body.signing_public_key, param="signing_public_key"),
            key32(body.transport_public_key, param="transport_public_key"),
            attestation,
        )

    @app.post("/v1/carriers/{serial}/key-update", tags=["wallet"])
    def key_update(serial: Serial, body: KeyUpdateRequest, request: Request) -> dict[str, Any]:
        """The KEY UPDATE (sealed to the carrier's own transport key, so useless to anyone
        else) from the epoch the carrier reports to the current one; ``key_update`` is null
        when it is up to date. A revoked carrier gets 403 ``carrier_revoked``. Rate-limited
        per client address (each update issued is an audit entry)."""
        limiter.check(request.client.host if request.client else "unknown")
        return inst.carrier_key_update(serial, body.from_epoch)

    @app.post("/v1/admin/scheme-epochs", status_code=201, tags=["admin"])
    def rotate_epoch(_: admin) -> dict[str, Any]:
        """Start a new scheme-key epoch now (e.g. after revoking a leaked carrier)."""
        epoch = inst.scheme_keys.rotate(inst.now())
        return {
            "epoch": epoch.epoch,
            "kid": epoch.key.kid,
            "public_key": b64e(epoch.key.public.raw),
            "retire_at": epoch.retire_at,
        }
