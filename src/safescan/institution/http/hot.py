"""The two hot routes (``POST /v1/payments`` and ``POST /v1/payments/lookup``) through one
ASGI layer (issue 20).

``institution serve`` puts four layers around the app (:func:`safescan.institution.server.
layers`): the request log (request id in and out, the access line, the metrics observation),
the ``/metrics`` endpoint (and its once-a-second gauges), the rollback guard and the body limit
(413 / 408, then the fast route or the framework). :class:`HotRoutes` sits above them and
serves a request to a hot route with no query string, while the guard does not refuse, in one
call: the same steps in the same order, done by the same code (the request log's
:class:`~safescan.api.obslog.Answer` and ``finish``, the metrics endpoint's ``tick``, the body
limit's ``read`` and ``framework``), without the layers' own calls in between. Everything else
(every other route, a query string, a refusing guard, lifespan) goes through the layers
themselves, so it is answered by construction as before.
tests/institution/test_hot_layer.py compares both on every kind of request.
"""

from __future__ import annotations

import time
from typing import Any

from safescan.api import obslog
from safescan.api.obslog import REQUEST_ID_KEY, Answer, RequestLog
from safescan.institution.http.asgi import (
    BODY_KEY,
    ASGIApp,
    BodyLimit,
    FastHandler,
    Receive,
    Scope,
    Send,
)
from safescan.institution.metrics import MetricsEndpoint
from safescan.institution.rollback import RollbackGuard


class HotRoutes:
    """ASGI: the body limit's fast routes served in one call; everything else to ``layers``
    (the request log, the metrics endpoint, the rollback guard and ``body`` stacked, whose
    parts these are)."""

    def __init__(
        self,
        layers: ASGIApp,
        *,
        log: RequestLog,
        meter: MetricsEndpoint,
        guard: RollbackGuard,
        body: BodyLimit,
    ) -> None:
        self.layers, self.log, self.meter, self.guard, self.body = layers, log, meter, guard, body
        self.fast: dict[Any, FastHandler] = dict(body.fast_routes)  # (scope.get: Any)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast.get((scope.get("method"), scope.get("path")))
        if (
            fast is None
            or scope["type"] != "http"
            or scope.get("query_string")
            or self.guard.error() is not None
        ):
            await self.layers(scope, receive, send)
            return
        # the request log
        rid = obslog.request_id_of(scope)
        scope[REQUEST_ID_KEY] = rid
        token = obslog.set_request_id(rid)
        started = time.perf_counter()
        answer = Answer(send, rid)
        try:
            self.meter.tick()  # the metrics endpoint (the guard was asked above)
            body = await self.body.read(scope, receive, answer)  # 413, 408, a disconnect
            if body is not None:
                scope[BODY_KEY] = body
                if await fast(scope, body, answer) is False:  # declined: the framework's
                    await self.body.framework(scope, body, receive, answer)
        finally:
            self.log.finish(scope, rid, started, answer.status, answer.error)
            obslog.reset_request_id(token)


__all__ = ["HotRoutes"]
