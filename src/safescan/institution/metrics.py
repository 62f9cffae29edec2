"""Prometheus metrics of one institution API process (prometheus-client), and ``GET /metrics``.

Counted per request by :class:`safescan.api.obslog.RequestLog` (see :func:`observe`):
``safescan_http_requests_total{method,route,status}`` and
``safescan_http_request_duration_seconds{method,route}`` (``route`` is the route *template*,
``<unmatched>`` for any path no route matched, so random paths add no series),
``safescan_payments_total`` (successful answers to ``POST /v1/payments``; an Idempotency-Key
replay of a success is an answer again and counts again) and
``safescan_payment_refusals_total{reason}`` (error answers to it, by error code). Webhook
attempts are counted as the dispatcher makes them (``safescan_webhook_attempts_total{outcome}``,
``safescan_webhook_failures_total{kind}``). Read at scrape time: the webhook queue depth (events
waiting for delivery, from the database: the same for every process), this process's database
pool (connections in use, idle, size, overflow) and SQLite writer queue, and its webhook
attempts in flight.

Several worker processes (``institution serve --workers N``): the command points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, so counters and
histograms of every worker are summed in each scrape (prometheus-client's multiprocess mode);
the scrape-time gauges are those of the worker that answered (pool, writer, in flight) or global
(queue depth), and every worker also publishes its own, labelled with its ``pid``
(``safescan_worker_db_pool_connections{pid,state}``, ``safescan_worker_db_writer_queued{pid}``,
``safescan_worker_webhook_in_flight{pid}``; prometheus-client's ``liveall`` gauges), refreshed
as it serves requests (at most once a second) and on each scrape it answers.
Separate processes (the cluster's API processes, each on its own port) are
scraped as separate targets and summed by Prometheus (``sum without (instance)``).

Who may read it: ``metrics_access`` ``loopback`` (default: a client on 127.0.0.1/::1 that did not
come through a proxy, i.e. no ``X-Forwarded-For``/``Forwarded`` header), ``token`` (``Authorization:
Bearer <token>`` equal to the metrics token, a separate secret: never the admin token), or
``off`` (404). Everyone else gets 403 with a typed error.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from safescan.api.errors import ConfigError, InstitutionError
from safescan.code.smallfile import read_small_text
from safescan.institution.db import Database
from safescan.institution.http.asgi import ASGIApp, Message, Receive, Scope, Send
from safescan.institution.http.auth import refuse_key_in_url
from safescan.institution.http.query import check_query

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ACCESS_MODES = ("loopback", "token", "off")
PAY_ROUTE = "/v1/payments"
#: request latency buckets, seconds (the payment path answers in milliseconds)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# no *_created series: half the lines, and nothing a dashboard uses
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "safescan_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "safescan_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by method and route template",
    ["method", "route"],
    buckets=BUCKETS,
)
PAYMENTS = Counter("safescan_payments", "Payment requests answered with success")
REFUSALS = Counter(
    "safescan_payment_refusals",
    "Payment requests answered with an error, by error code",
    ["reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "safescan_webhook_attempts",
    "Webhook delivery attempts, by outcome (delivered, failed)",
    ["outcome"],
)
WEBHOOK_FAILURES = Counter(
    "safescan_webhook_failures",
    "Failed webhook delivery attempts, by kind (http_status, timeout, connect, tls, refused...)",
    ["kind"],
)

_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe(method: str, route: str, status: int, seconds: float, error: str | None) -> None:
    """One answered request (the :class:`~safescan.api.obslog.RequestLog` observer). Label
    values are bounded: the method and route come normalized, the status is an HTTP status and
    the reason an error code of the API's vocabulary."""
    key = (method, route, status)
    pair = _children.get(key)
    if pair is None:
        pair = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_LATENCY.labels(method, route),
        )
        _children[key] = pair
    pair[0].inc()
    pair[1].observe(seconds)
    if route == PAY_ROUTE and method == "POST":
        if 200 <= status < 300:
            PAYMENTS.inc()
        elif status:
            REFUSALS.labels(error or "unknown").inc()


def webhook_attempt(_event_id: str, att: Any) -> None:
    """One webhook attempt recorded (the dispatcher's ``on_attempt`` hook)."""
    if att.ok:
        WEBHOOK_ATTEMPTS.labels("delivered").inc()
        return
    WEBHOOK_ATTEMPTS.labels("failed").inc()
    WEBHOOK_FAILURES.labels(str(att.error_kind or "unknown")[:24]).inc()


class ProcessCollector(Collector):
    """Gauges read when scraped: webhook queue depth, database pool, writer queue."""

    def __init__(self, db: Database, dispatcher: Any = None) -> None:
        self.db, self.dispatcher = db, dispatcher

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges (the queue depth is left out when the database cannot be read)."""
        depth = GaugeMetricFamily(
            "safescan_webhook_queue_depth", "Events waiting for webhook delivery (all processes)"
        )
        try:
            n = self.db.read(
                lambda c: c.exec_driver_sql(
                    "SELECT count(*) FROM events WHERE webhook_state = 'pending'"
                ).scalar()
            )
            depth.add_metric([], float(n or 0))
            yield depth
        except Exception:  # noqa: BLE001, S110 - an unreadable database: no sample, /readyz says why
            pass
        pool = self.db.engine.pool
        conns = GaugeMetricFamily(
            "safescan_db_pool_connections",
            "Database connections of this process's pool, by state (in_use, idle)",
            labels=["state"],
        )
        conns.add_metric(["in_use"], float(_call(pool, "checkedout")))
        conns.add_metric(["idle"], float(_call(pool, "checkedin")))
        yield conns
        size = GaugeMetricFamily("safescan_db_pool_size", "Configured size of the pool")
        size.add_metric([], float(_call(pool, "size")))
        yield size
        over = GaugeMetricFamily(
            "safescan_db_pool_overflow", "Connections beyond the pool size (negative: unused)"
        )
        over.add_metric([], float(_call(pool, "overflow")))
        yield over
        status = self.db.writer_status()
        queued = GaugeMetricFamily(
            "safescan_db_writer_queued", "Writes waiting for the SQLite writer (0 on PostgreSQL)"
        )
        queued.add_metric([], float(status.get("queued", 0) or 0))
        yield queued
        if self.dispatcher is not None:
            flight = GaugeMetricFamily(
                "safescan_webhook_in_flight", "Webhook attempts in flight in this process"
            )
            flight.add_metric([], float(len(getattr(self.dispatcher, "_tasks", ()))))
            yield flight

    def publish(self) -> None:
        """Multiprocess mode: this worker's gauges into its metric file, labelled with its pid
        (every scrape, whichever worker answers it, shows them all)."""
        gauges = _worker_gauges()
        if gauges is None:
            return
        pool = self.db.engine.pool
        gauges.pool.labels("in_use").set(_call(pool, "checkedout"))
        gauges.pool.labels("idle").set(_call(pool, "checkedin"))
        gauges.queued.set(float(self.db.writer_status().get("queued", 0) or 0))
        if self.dispatcher is not None:
            gauges.in_flight.set(len(getattr(self.dispatcher, "_tasks", ())))


@dataclass(frozen=True)
class _WorkerGauges:
    pool: Gauge
    queued: Gauge
    in_flight: Gauge


_WORKER: list[_WorkerGauges] = []


def _worker_gauges() -> _WorkerGauges | None:
    """The per-worker gauges, made on first use, in multiprocess mode only."""
    if not os.environ.get(MULTIPROC_ENV):
        return None
    if not _WORKER:
        _WORKER.append(
            _WorkerGauges(
                Gauge(
                    "safescan_worker_db_pool_connections",
                    "Database connections of each worker's pool, by state (in_use, idle)",
                    ["state"],
                    registry=None,
                    multiprocess_mode="liveall",  # one series per live worker (pid)
                ),
                Gauge(
                    "safescan_worker_db_writer_queued",
                    "Writes waiting for each worker's SQLite writer (0 on PostgreSQL)",
                    registry=None,
                    multiprocess_mode="liveall",  # one series per live worker (pid)
                ),
                Gauge(
                    "safescan_worker_webhook_in_flight",
                    "Webhook attempts in flight in each worker",
                    registry=None,
                    multiprocess_mode="liveall",  # one series per live worker (pid)
                ),
            )
        )
    return _WORKER[0]


def _call(pool: Any, name: str) -> int:
    fn = getattr(pool, name, None)
    return int(fn()) if callable(fn) else 0


@dataclass(frozen=True)
class MetricsAccess:
    """Who may read ``/metrics``: ``loopback``, ``token`` (with ``token``) or ``off``."""

    mode: str = "loopback"
    token: str | None = None

    @classmethod
    def load(cls, mode: str, token_file: Path | None) -> MetricsAccess:
        """From the settings; a ``token`` mode reads its token (16+ characters) from a file."""
        if mode not in ACCESS_MODES:
            raise ConfigError(f"metrics access must be one of {', '.join(ACCESS_MODES)}")
        if mode != "token":
            return cls(mode)
        if token_file is None:
            raise ConfigError("metrics access 'token' needs a metrics token file")
        try:
            token = read_small_text(Path(token_file)).strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the metrics token file: {exc.strerror}") from None
        if len(token) < 16:
            raise ConfigError("the metrics token must be at least 16 characters")
        return cls(mode, token)

    def allows(self, scope: Scope) -> bool:
        """Whether this request may read the metrics."""
        headers = dict(scope.get("headers", ()))
        if self.mode == "token":
            scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            return (
                self.token is not None
                and scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), self.token.encode())
            )
        if self.mode != "loopback" or b"x-forwarded-for" in headers or b"forwarded" in headers:
            return False
        client = scope.get("client")
        try:
            return client is not None and ipaddress.ip_address(client[0]).is_loopback
        except ValueError:
            return False


def exposition(collector: Collector) -> bytes:
    """The text exposition: every worker's counters in multiprocess mode, this process's
    otherwise; plus ``collector``'s gauges."""
    registry: CollectorRegistry
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(collector)
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(_single(collector))


def _single(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class MetricsEndpoint:
    """ASGI wrapper answering ``GET /metrics`` (see the module docstring); everything else
    goes on to ``app``."""

    def __init__(self, app: ASGIApp, collector: Collector, access: MetricsAccess) -> None:
        self.app, self.collector, self.access = app, collector, access
        self._published = 0.0

    def _publish(self, now: float) -> None:
        self._published = now  # (once a second in every mode: not an environment read per request)
        if isinstance(self.collector, ProcessCollector) and os.environ.get(MULTIPROC_ENV):
            self.collector.publish()

    def tick(self) -> None:
        """What every request passing by does: this worker's gauges, once a second at most."""
        now = time.monotonic()
        if now - self._published >= 1.0:
            self._publish(now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/metrics" or self.access.mode == "off":
            self.tick()
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await _send(send, 405, _error("MethodNotAllowed", "method_not_allowed", "use GET"))
            return
        query: bytes = scope.get("query_string") or b""
        if query:  # read by programs, like the API: a parameter is refused (none is taken)
            try:
                refuse_key_in_url(query)  # the metrics token goes in the header, never here
                check_query(query, {})
            except InstitutionError as exc:
                await _send(send, exc.status, json.dumps({"error": exc.to_dict()}).encode())
                return
        if not self.access.allows(scope):
            why = (
                "the metrics need the metrics token (Authorization: Bearer ...)"
                if self.access.mode == "token"
                else "the metrics are readable from this host's loopback only, not through a proxy"
            )
            await _send(send, 403, _error("Forbidden", "forbidden", why))
            return
        import asyncio

        self._publish(time.monotonic())
        body = await asyncio.to_thread(exposition, self.collector)
        await _send(send, 200, body, CONTENT_TYPE_LATEST.encode())


def _error(type_: str, code: str, message: str) -> bytes:
    return json.dumps({"error": {"type": type_, "code": code, "message": message}}).encode()


async def _send(send: Send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    message: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
    }
    await send(message)
    await send({"type": "http.response.body", "body": body})


def prepare_multiprocess(directory: Path) -> None:
    """Before starting worker processes: an empty ``directory`` for their metric files, named in
    the environment the workers inherit (stale files of an earlier run would add up)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)


__all__ = [
    "ACCESS_MODES",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "PAYMENTS",
    "REFUSALS",
    "MetricsAccess",
    "MetricsEndpoint",
    "ProcessCollector",
    "exposition",
    "observe",
    "prepare_multiprocess",
    "webhook_attempt",
]
