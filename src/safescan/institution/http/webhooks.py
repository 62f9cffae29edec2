"""HTTP routes of a merchant's webhook operations (``safescan pos webhook ...``).

One router, mounted by the app assembly (:func:`.app.create_app`) with the merchant
authentication dependency; the decisions are in :mod:`safescan.institution.webhook_ops`. ``PUT
/v1/merchant/webhook`` (set or clear the URL) stays with the other merchant routes.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from safescan.institution.http.auth import MerchantAuth
from safescan.institution.http.query import JSONRoute
from safescan.institution.service import Institution
from safescan.institution.webhook_dispatcher import WebhookDispatcher
from safescan.institution.webhook_ops import WebhookOps
from safescan.institution.webhook_secrets import DEFAULT_OVERLAP, MAX_OVERLAP

EventId = Annotated[str, Path(min_length=5, max_length=40, pattern=r"^evt_[A-Za-z0-9_]+$")]


class SecretRotation(BaseModel):
    """Create or rotate the endpoint's signing secret."""

    model_config = ConfigDict(extra="forbid")
    overlap_seconds: Annotated[int, Field(ge=0, le=MAX_OVERLAP, strict=True)] = DEFAULT_OVERLAP


def webhook_routes(
    inst: Institution, dispatcher: WebhookDispatcher | None, auth: MerchantAuth
) -> APIRouter:
    """The operations over ``inst`` (the test delivery with ``dispatcher``'s limits, TLS
    context and endpoint secrets: :meth:`Institution.webhook_ops`), routed."""
    return webhook_router(inst.webhook_ops(dispatcher), auth)


def webhook_router(ops: WebhookOps, auth: MerchantAuth) -> APIRouter:
    """The merchant's webhook routes, authenticated by ``auth`` (reading needs the scope
    ``webhooks:read``, changing ``webhooks:write``)."""
    router = APIRouter(tags=["merchant"], dependencies=[auth.caller], route_class=JSONRoute)
    Read = Annotated[str, auth.scope("webhooks:read")]  # noqa: N806 - type aliases
    Write = Annotated[str, auth.scope("webhooks:write")]  # noqa: N806

    @router.get("/v1/merchant/webhook")
    def endpoint(mid: Read) -> dict[str, Any]:
        """The webhook URL, the public key of ``v1a`` signatures (``whpk_``), whether a
        ``v1`` secret exists (its version and dates, never the secret) and the log's
        retention."""
        return ops.endpoint(mid)

    @router.post("/v1/merchant/webhook/secret", status_code=201)
    def rotate(body: SecretRotation, mid: Write) -> dict[str, Any]:
        """Create the endpoint's ``whsec_`` secret, or rotate it keeping the previous one
        ``overlap_seconds`` (default 24 h). The secret is in this answer only: store it."""
        return ops.rotate(mid, body.overlap_seconds)

    @router.post("/v1/merchant/webhook/test")
    async def test(mid: Write) -> dict[str, Any]:
        """Send a signed ``webhook.test`` event to the URL now; the attempt's outcome."""
        return await ops.test(mid)

    @router.get("/v1/merchant/webhook/deliveries")
    def deliveries(
        mid: Read,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        event_id: Annotated[
            str | None, Query(min_length=5, max_length=40, pattern=r"^evt_[A-Za-z0-9_]+$")
        ] = None,
    ) -> dict[str, Any]:
        """The delivery log, newest first (page with ``before=<last id>``; one event with
        ``event_id``)."""
        return ops.deliveries(mid, limit=limit, before=before, event_id=event_id)

    @router.post("/v1/merchant/events/{event_id}/resend")
    def resend(event_id: EventId, mid: Write) -> dict[str, Any]:
        """Queue one of the merchant's events for delivery again (a pending event is left as
        it is: resending twice queues it once). Another merchant's event: 404."""
        return ops.resend(mid, event_id)

    return router
