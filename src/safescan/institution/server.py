"""Building a running institution from configuration (used by the CLI and uvicorn workers)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from prometheus_client.registry import Collector

from safescan.api import obslog
from safescan.api.errors import ConfigError
from safescan.code.errors import SafescanError
from safescan.institution import metrics
from safescan.institution.access_log import api_routes, observed
from safescan.institution.checkpoints import CheckpointFile, default_path
from safescan.institution.config import (
    ENV_CHECKPOINT_INTERVAL,
    ENV_CHECKPOINTS,
    ENV_DB,
    ENV_PASSPHRASE_FILE,
    ENV_TUNING,
    Tuning,
)
from safescan.institution.db import DEFAULT_WRITE_DEADLINE, Database, require_current_schema
from safescan.institution.http import create_app
from safescan.institution.http.asgi import ASGIApp, BodyLimit
from safescan.institution.http.hot import HotRoutes
from safescan.institution.keystore import KeyStore, default_key_dir, load_passphrase
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.reservations import Journal
from safescan.institution.rollback import GuardedApp, RollbackGuard
from safescan.institution.service import Institution
from safescan.institution.webhook_dispatcher import DeliveryLimits, WebhookDispatcher
from safescan.institution.webhook_log import Retention
from safescan.institution.webhook_secrets import EndpointSecrets
from safescan.institution.webhook_targets import TargetPolicy
from safescan.institution.webhooks import RetryPolicy


def open_institution(
    db_url: str,
    keys_dir: Path | None,
    passphrase_file: Path | None,
    *,
    pool_size: int = 16,
    checkpoints: Path | None = None,
    write_deadline: float = DEFAULT_WRITE_DEADLINE,
    tuning: Tuning | None = None,
) -> Institution:
    """Load keys and connect; refuses a database that is not migrated to the newest schema.
    Serials are reserved in the checkpoint file (``checkpoints``, default beside the keys).
    ``tuning`` sets the merchant rate limit and the webhook rules (defaults otherwise)."""
    passphrase = load_passphrase(passphrase_file)
    key_dir = keys_dir or default_key_dir(db_url)
    keys = KeyStore(key_dir).load(passphrase)
    db = Database(db_url, pool_size=pool_size, write_deadline=write_deadline)
    try:
        require_current_schema(db.engine)
    except SafescanError:
        db.dispose()
        raise
    tuning = tuning or Tuning()
    inst = Institution(
        db,
        keys,
        webhooks_enabled=tuning.webhooks,
        webhook_targets=webhook_targets(tuning),
        merchant_rate=(tuning.merchant_rate, tuning.merchant_burst),
    )
    inst.journal = Journal(CheckpointFile(checkpoints or default_path(key_dir)), keys)
    return inst


def webhook_targets(tuning: Tuning) -> TargetPolicy:
    """Where webhooks may go, from the operator's tuning."""
    return TargetPolicy(allow=tuning.webhook_allow, allow_http=tuning.webhook_http)


def build_app(
    db_url: str,
    keys_dir: Path | None,
    passphrase_file: Path | None,
    tuning: Tuning,
    *,
    checkpoints: Path | None = None,
    checkpoint_interval: float = 1.0,
) -> ASGIApp:
    """The ASGI app for one API process, refusing to serve a rolled-back database: request
    ids, the access log and ``/metrics`` around the API (see :mod:`.metrics`)."""
    token_file = tuning.metrics_token_file
    access = metrics.MetricsAccess.load(
        tuning.metrics_access, Path(token_file) if token_file else None
    )
    inst = open_institution(
        db_url,
        keys_dir,
        passphrase_file,
        checkpoints=checkpoints,
        write_deadline=tuning.write_deadline,
        tuning=tuning,
    )
    assert inst.journal is not None
    guard = RollbackGuard(inst.db, inst.keys, inst.journal.file.path, interval=checkpoint_interval)
    guard.check()  # before the first request
    dispatcher = None
    if tuning.webhooks:
        dispatcher = WebhookDispatcher(
            inst.db,
            inst.keys.root,
            inst.keys.root_kid,
            policy=RetryPolicy(base_delay=tuning.webhook_base_delay),
            targets=inst.webhook_targets,
            limits=DeliveryLimits(
                deadline=tuning.webhook_deadline,
                per_endpoint=tuning.webhook_endpoint_concurrency,
                concurrency=tuning.webhook_concurrency,
            ),
            retention=Retention(
                per_endpoint=tuning.webhook_log_per_endpoint,
                max_age=tuning.webhook_log_max_days * 86400,
            ),
            secrets=EndpointSecrets(inst.keys.secret),
            on_attempt=metrics.webhook_attempt,
        )
    app = create_app(
        inst,
        dispatcher=dispatcher,
        public_limiter=RateLimiter(tuning.merchant_rate, tuning.merchant_burst),
        maintenance_interval=tuning.maintenance_interval,
        public_url=tuning.public_url,
    )
    collector = metrics.ProcessCollector(inst.db, dispatcher)
    served = layers(app, guard, collector, access, access_log=tuning.access_log)
    settle_heap()
    return served


def layers(
    app: ASGIApp,
    guard: RollbackGuard,
    collector: Collector,
    access: metrics.MetricsAccess,
    *,
    access_log: bool = True,
) -> ASGIApp:
    """What one API process serves around ``app`` (:func:`.http.create_app`'s): request ids,
    the access log and the request metrics, ``/metrics``, the rollback guard; the two hot
    routes through all of it in one call (:class:`.http.hot.HotRoutes`)."""
    meter = metrics.MetricsEndpoint(GuardedApp(app, guard), collector, access)
    # the API's routes: a 408/413 (body limit) or 503 (guard) answered before the router is
    # logged and counted under the route it asked for, not <unmatched>
    api = app.app if isinstance(app, BodyLimit) else app
    log = observed(meter, access_log=access_log, routes=api_routes(api))
    if not isinstance(app, BodyLimit):
        return log
    return HotRoutes(log, log=log, meter=meter, guard=guard, body=app)


def settle_heap() -> None:
    """After start-up: collect once, then move every object alive now (modules, the app, the
    keys, SQLAlchemy's tables) out of the garbage collector's sight (``gc.freeze``), so a
    full collection scans only what requests allocate: without it, each one walked the whole
    start-up heap and stalled every request in flight (a per-second p99 spike)."""
    gc.collect()
    gc.freeze()


def app_from_env() -> ASGIApp:
    """uvicorn factory for ``--workers N`` (configuration comes through the environment)."""
    db_url = os.environ.get(ENV_DB)
    if not db_url:
        raise ConfigError(f"{ENV_DB} is not set")
    pf = os.environ.get(ENV_PASSPHRASE_FILE)
    keys = os.environ.get("SAFESCAN_INSTITUTION_KEYS")
    cp = os.environ.get(ENV_CHECKPOINTS)
    tuning = Tuning.decode(os.environ.get(ENV_TUNING, Tuning().encode()))
    obslog.configure(tuning.log_level, tuning.log_format)
    return build_app(
        db_url,
        Path(keys) if keys else None,
        Path(pf) if pf else None,
        tuning,
        checkpoints=Path(cp) if cp else None,
        checkpoint_interval=float(os.environ.get(ENV_CHECKPOINT_INTERVAL, "1.0")),
    )
