"""The institution's ASGI app: one router per caller, one handler per error type, the body
limit around it all.

::

    BodyLimit                      body buffered (413 / 408), POST /v1/payments -> fast_pay,
                                   POST /v1/payments/lookup -> fast_lookup (well-formed ones)
      FastAPI                      exception_handlers = errors.HANDLERS
        health.health_router       /healthz, /readyz, /health, /ready (domain.health checks)
        wallet.wallet_router       public + wallet (no credentials)
        admin.admin_router         Authorization: Bearer (checked for the whole router)
        merchant.merchant_router   API key (Bearer, scopes) or signed request (auth.MerchantAuth)
        webhooks.webhook_routes    the merchant's webhook operations (same)
        api_keys.*_key_router      API key management (signed requests; administrator)
        checkout.checkout_router   checkout sessions (API key or signed) and their hosted pages

The app configures nothing in the domain: the institution (and the webhook dispatcher) come
built, configured by their builder (:mod:`safescan.institution.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from safescan.code.text import preload
from safescan.institution.background import maintenance_loop
from safescan.institution.domain.health import Heartbeat
from safescan.institution.http import errors
from safescan.institution.http.admin import admin_router, bearer_token
from safescan.institution.http.api_keys import admin_key_router, merchant_key_router
from safescan.institution.http.asgi import ASGIApp, BodyLimit
from safescan.institution.http.auth import MerchantAuth
from safescan.institution.http.checkout import checkout_router
from safescan.institution.http.docs_pages import keep_docs_offline
from safescan.institution.http.health import health_router
from safescan.institution.http.merchant import merchant_router
from safescan.institution.http.query import declare_strict_query, strict_query
from safescan.institution.http.wallet import fast_lookup, fast_pay, wallet_router
from safescan.institution.http.webhooks import webhook_routes
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution
from safescan.institution.webhook_dispatcher import WebhookDispatcher
from safescan.web.netguard import Limits, connection_status

PUBLIC_RATE = (100.0, 200.0)  # per client address: requests per second, burst


def create_app(
    inst: Institution,
    *,
    dispatcher: WebhookDispatcher | None = None,
    public_limiter: RateLimiter | None = None,
    merchant_auth: MerchantAuth | None = None,
    background: bool = True,
    maintenance_interval: float = 5.0,
    fast: bool = True,
    public_url: str | None = None,
) -> ASGIApp:
    """The ASGI application over ``inst`` (wrapped in the body-size limit).

    With ``background``, runs the maintenance task and, when the institution records webhooks,
    ``dispatcher``. ``public_limiter`` limits the public endpoints per client address (default
    :data:`PUBLIC_RATE`); ``merchant_auth`` authenticates merchant routes (default: its
    limits of wrong API keys, :data:`.auth.FAILED_KEY_RATE`). ``fast=False`` serves the two
    hot routes through the framework too (tests compare both). ``public_url`` is the base of
    the links handed out (the hosted checkout page; default: the address each connection
    reached, never its ``Host`` header)."""
    preload()  # what requests would load on first use: none opens a file for it
    limiter = public_limiter or RateLimiter(*PUBLIC_RATE)
    if not (background and inst.webhooks_enabled):
        dispatcher = None
    readiness = inst.health.readiness()  # database, writer, schema, keys
    readiness.add("connections", connection_status)
    maintenance_beat = Heartbeat(maintenance_interval)
    if background:
        readiness.add("maintenance", maintenance_beat.check)
    if dispatcher is not None:
        readiness.add("webhooks", dispatcher.health)
    hooks = dispatcher

    def webhooks_state() -> str:
        return "off" if hooks is None else str(hooks.health()["state"])

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        # what the first payments would otherwise do on the event loop, before the server takes
        # connections (docs/performance.md, ninth sitting)
        await inst.payments.warm()
        if dispatcher is not None:
            tasks.append(asyncio.create_task(dispatcher.run(stop), name="webhook-dispatcher"))
        if background:
            tasks.append(
                asyncio.create_task(
                    maintenance_loop(inst, stop, maintenance_interval, maintenance_beat)
                )
            )
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(t, 5)
            inst.db.dispose()

    # the /docs and /redoc pages load their scripts from this server, never from a CDN
    app = FastAPIOffline(
        title="safescan payment institution",
        version="1",
        description=(
            "Sealed, signed payment codes, carrier-signed authorizations, a ledger. Every"
            " operation refuses a query parameter it does not declare (400 unknown_parameter)"
            " and one given twice (400 duplicate_parameter)."
        ),
        lifespan=lifespan,
        responses=errors.RESPONSES,
        exception_handlers=errors.HANDLERS,
        # an undeclared or repeated query parameter is a typed 400 on every route, first
        dependencies=[Depends(strict_query)],
    )
    # no 307 from "/v1/keys/" to "/v1/keys": its Location was built from the Host header (an
    # open redirect for whoever sets it); an unknown path is the typed 404
    app.router.redirect_slashes = False
    app.include_router(health_router(inst.health, readiness, inst.now, webhooks=webhooks_state))
    app.include_router(wallet_router(inst, limiter=limiter))
    app.include_router(admin_router(inst, dispatcher=dispatcher))
    app.include_router(admin_key_router(inst, bearer_token(inst)))
    auth = merchant_auth or MerchantAuth(inst)
    app.include_router(merchant_router(inst, auth=auth))
    app.include_router(webhook_routes(inst, dispatcher, auth))
    app.include_router(merchant_key_router(inst, auth))
    app.include_router(
        checkout_router(
            inst,
            Annotated[str, auth.scope("checkout:read")],
            Annotated[str, auth.scope("checkout:write")],
            limiter=limiter,
            public_url=public_url,
        )
    )
    keep_docs_offline(app)
    declare_strict_query(app)
    fast_routes = {
        ("POST", "/v1/payments"): fast_pay(inst),
        ("POST", "/v1/payments/lookup"): fast_lookup(inst, limiter),
    }
    return BodyLimit(
        app,
        fast_routes=fast_routes if fast else {},
        body_timeout=Limits.from_env().head_timeout,
    )


__all__ = ["PUBLIC_RATE", "create_app"]
