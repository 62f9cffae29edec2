"""The institution: the :class:`~.domain.core.Core` (database, keys, clock) and the domain
modules built around it, one per sub-domain (see docs/institution.md, "Layout").

Every state change runs in one database transaction (:meth:`Database.write`) together with its
ledger transfer, its outbox event and its audit entry; the HTTP layer (:mod:`.http`) only parses,
authenticates and formats.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from safescan.institution.customers import Accounts
from safescan.institution.db import Database
from safescan.institution.domain.access import Access
from safescan.institution.domain.carriers import Carriers
from safescan.institution.domain.certificates import Certificates
from safescan.institution.domain.checkout import Checkout
from safescan.institution.domain.core import Core
from safescan.institution.domain.customers import Customers
from safescan.institution.domain.health import Health
from safescan.institution.domain.idempotency import Stored, request_hash
from safescan.institution.domain.merchants import Merchants
from safescan.institution.domain.orders import Orders
from safescan.institution.domain.payments import Payments
from safescan.institution.domain.refunds import Refunds
from safescan.institution.domain.setup import Setup
from safescan.institution.event_feed import EventFeed
from safescan.institution.keystore import InstitutionKeys
from safescan.institution.settlement import Settlement
from safescan.institution.webhook_dispatcher import WebhookDispatcher
from safescan.institution.webhook_log import RETENTION
from safescan.institution.webhook_ops import WebhookOps
from safescan.institution.webhook_secrets import EndpointSecrets
from safescan.institution.webhook_targets import TargetPolicy


class Institution(Core):
    """The payment institution over one database and one key set: the core plus its domain
    modules (``.merchants``, ``.customers``, ``.carriers``, ``.certificates``, ``.orders``,
    ``.payments``, ``.refunds``, ``.checkout``, ``.access``, ``.setup``, ``.health``) and the
    views the API reads (``.settlement``, ``.event_feed``, ``.accounts``)."""

    def __init__(
        self,
        db: Database,
        keys: InstitutionKeys,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        webhooks_enabled: bool = True,
        webhook_targets: TargetPolicy | None = None,
        merchant_rate: tuple[float, float] = (100.0, 200.0),
    ) -> None:
        super().__init__(
            db,
            keys,
            clock=clock,
            monotonic=monotonic,
            webhooks_enabled=webhooks_enabled,
            webhook_targets=webhook_targets,
            merchant_rate=merchant_rate,
        )
        self.setup = Setup(self)
        self.access = Access(self)
        self.certificates = Certificates(self)
        self.merchants = Merchants(self, self.certificates)
        self.customers = Customers(self)
        self.carriers = Carriers(self, self.certificates)
        self.orders = Orders(self)
        self.payments = Payments(self, self.carriers)
        self.refunds = Refunds(self)
        self.checkout = Checkout(self, self.orders, self.merchants)
        self.health = Health(self)  # database, schema, keys, writer: /health, /readyz
        # what the API reads: settlement reports, merchants' signed event feed, customer
        # accounts (the administrator's list, the statement a wallet reads)
        self.settlement = Settlement(db)
        self.event_feed = EventFeed(db, keys)
        self.accounts = Accounts(db, keys.secret, self.now)

    def webhook_ops(self, dispatcher: WebhookDispatcher | None = None) -> WebhookOps:
        """The merchants' webhook operations (endpoint, secret rotation, test delivery, log,
        resend), with ``dispatcher``'s delivery limits, TLS context, endpoint secrets and log
        retention when there is one."""
        secrets = EndpointSecrets(self.keys.secret)
        if dispatcher is not None and dispatcher.secrets is not None:
            secrets = dispatcher.secrets
        return WebhookOps(
            self.db,
            self.keys.root,
            self.keys.root_kid,
            secrets,
            lambda: self.webhook_targets,
            clock=self.clock,
            limits=dispatcher.limits if dispatcher is not None else None,
            ssl_context=dispatcher.ssl_context if dispatcher is not None else None,
            retention=dispatcher.retention if dispatcher is not None else RETENTION,
        )


__all__ = ["Institution", "Stored", "request_hash"]
