"""The institution: the :class:`~.domain.core.Core` (database, keys, clock) and the domain
modules built around it, one per sub-domain (see docs/institution.md, "Layout").

Every state change runs in one database transaction (:meth:`Database.write`) together with its
ledger transfer, its outbox event and its audit entry; the HTTP layer (:mod:`.api`) only parses,
authenticates and formats.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from safescan.institution.db import Database
from safescan.institution.domain.access import Access
from safescan.institution.domain.carriers import Carriers
from safescan.institution.domain.certificates import Certificates
from safescan.institution.domain.core import Core
from safescan.institution.domain.customers import Customers
from safescan.institution.domain.merchants import Merchants
from safescan.institution.domain.orders import Orders
from safescan.institution.domain.payments import Payments
from safescan.institution.domain.refunds import Refunds
from safescan.institution.domain.setup import Setup
from safescan.institution.idempotency import Stored, request_hash
from safescan.institution.keystore import InstitutionKeys


class Institution(Core):
    """The payment institution over one database and one key set: the core plus its domain
    modules (``.merchants``, ``.customers``, ``.carriers``, ``.certificates``, ``.orders``,
    ``.payments``, ``.refunds``, ``.access``, ``.setup``)."""

    def __init__(
        self,
        db: Database,
        keys: InstitutionKeys,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        webhooks_enabled: bool = True,
    ) -> None:
        super().__init__(
            db, keys, clock=clock, monotonic=monotonic, webhooks_enabled=webhooks_enabled
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
        # the former one-class interface, while its callers move to the modules above
        self.bootstrap = self.setup.bootstrap
        self.register_keys = self.setup.register_keys
        self.public_keys = self.setup.public_keys
        self.check_admin = self.access.check_admin
        self.authenticate_merchant = self.access.authenticate_merchant
        self.purge_nonces = self.access.purge_nonces
        self.create_merchant = self.merchants.create
        self.get_merchant = self.merchants.get
        self.set_webhook = self.merchants.set_webhook
        self.revoke_merchant = self.merchants.revoke
        self.certify_merchant_key = self.merchants.certify_key
        self.events_after = self.merchants.events_after
        self.create_customer = self.customers.create
        self.get_customer = self.customers.get
        self.fund_customer = self.customers.fund
        self.issue_enrollment_token = self.customers.issue_enrollment_token
        self.enroll_carrier = self.carriers.enroll
        self.forget_carriers = self.carriers.forget
        self.carrier_key_update = self.carriers.key_update
        self.revoke_carrier = self.carriers.revoke
        self.revocation_list = self.certificates.revocation_list
        self.create_order = self.orders.create
        self.precreate_orders = self.orders.precreate
        self.create_static_code = self.orders.static_code
        self.get_order = self.orders.get
        self.close_order = self.orders.close
        self.expire_orders = self.orders.expire
        self.list_orders = self.orders.page
        self.code_status = self.orders.code_status
        self.pay = self.payments.pay
        self.pay_async = self.payments.pay_async
        self.get_payment = self.payments.get
        self.refund = self.refunds.refund


__all__ = ["Institution", "Stored", "request_hash"]
