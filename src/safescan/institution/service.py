"""The institution's business logic: merchants, customers, carriers, orders, payments, refunds.

Every state change runs in one database transaction (:meth:`Database.write`) together with its
ledger transfer, its outbox event and its audit entry. The HTTP layer (:mod:`.api`) only parses,
authenticates and formats; everything that decides is here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import Connection, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from safescan.api import merchant_auth
from safescan.api.encoding import b64e
from safescan.api.errors import (
    CarrierRevoked,
    Conflict,
    CounterReplay,
    Forbidden,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
    OrderNotPayable,
    OrderNotRefundable,
    PaymentRefused,
    RateLimited,
    ReplayedRequest,
    Unauthenticated,
)
from safescan.code.authorization import Authorization, Receipt
from safescan.code.certs import Certificate, RevocationList, Role, issue_certificate
from safescan.code.currency import currency as lookup_currency
from safescan.code.envelope import Issuer, OpenedCode, encode_text, open_code, seal
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey, VerifyKey
from safescan.code.keyupdate import is_epoch_kid
from safescan.code.payment import (
    MAX_DYNAMIC_VALIDITY,
    MAX_STATIC_VALIDITY,
    CodeKind,
    DynamicCode,
    LineItem,
    Merchant,
    StaticCode,
)
from safescan.code.provisioning import carrier_subject
from safescan.institution import (
    admin_tokens,
    audit,
    enrollment,
    guards,
    idempotency,
    ledger,
    nonces,
    sql,
)
from safescan.institution.db import Database
from safescan.institution.epochs import EpochKeyring
from safescan.institution.guards import CertificateLimit
from safescan.institution.idempotency import (
    Request,
    Stored,
    order_request,
    payment_request,
    refund_request,
    request_hash,
)
from safescan.institution.keystore import InstitutionKeys
from safescan.institution.merchant_sealing import (
    certificate_problem,
    scheme_key_list,
    withdrawn_order,
)
from safescan.institution.models import (
    AdminToken,
    CarrierRow,
    CertificateRow,
    Counter,
    CustomerRow,
    EnrollmentToken,
    Event,
    InstitutionKey,
    MerchantRow,
    OrderRow,
    Payment,
    Refund,
)
from safescan.institution.reservations import Journal, allocate_serial
from safescan.institution.sql import insert_ignore as _insert_ignore
from safescan.institution.util import canonical_json, new_id
from safescan.institution.webhook_targets import TargetPolicy
from safescan.institution.webhooks import event_params, new_event

ORDER_ID_CHARS = 12
DEFAULT_ORDER_TTL = 900
ENROLLMENT_TTL = 7 * 24 * 3600
CRL_COUNTER = "crl_sequence"
PAID_STATES = ("PAID", "PARTIALLY_REFUNDED", "REFUNDED")
MAX_SERIAL = 2**31 - 1  # certificate serials are 32-bit database integers
MAX_LIVE_MERCHANT_CERTS = 4  # unexpired, unrevoked code-signing certificates per merchant
MAX_MERCHANT_CERT_DAYS = 366
PAYMENT_ACTION = "payment.create"


@dataclass(frozen=True, slots=True)
class _PaymentPlan:
    """A verified payment, ready to be written: see :meth:`Institution._plan_payment`."""

    opened: OpenedCode
    auth: Authorization
    customer_id: str
    mid: str
    order_id: str
    payment_id: str
    pseudonym: str
    now: int
    fast: bool  # an institution-issued dynamic code: its order row exists, CREATED
    entity: str
    chain: int
    receipt: bytes
    event: dict[str, Any]
    audit_actor: str
    audit_data: dict[str, Any]
    idem: Request | None
    result: Stored




def _merchant_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "city": r.city,
        "country": r.country,
        "mcc": r.mcc,
        "settlement_account": r.settlement_account,
        "api_public_key": b64e(r.api_public_key),
        "webhook_url": r.webhook_url,
        "status": r.status,
        "created_at": r.created_at,
    }


def _order_dict(r: Any) -> dict[str, Any]:
    return {
        "order_id": r.order_id,
        "merchant_id": r.merchant_id,
        "kind": r.kind,
        "state": r.state,
        "reference": r.reference,
        "currency": r.currency,
        "total": r.total,
        "items": json.loads(r.items),
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "paid_at": r.paid_at,
        "paid_amount": r.paid_amount,
        "refunded_amount": r.refunded_amount,
        "payment_id": r.payment_id,
    }


class Institution:
    """The payment institution over one database and one key set."""

    def __init__(
        self,
        db: Database,
        keys: InstitutionKeys,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        webhooks_enabled: bool = True,
    ) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock  # the wall clock: timestamps, expiry
        self.elapsed = nonces.ElapsedClock(monotonic)  # how long nonces are kept
        self.issuer = Issuer.institution(keys.root, keys.root_kid)
        self.trust = keys.trust_store()
        # static-code keys (key directory) + scheme-key epochs for dynamic codes (.epochs)
        self.scheme_keys = EpochKeyring(db, keys.scheme, keys.secret, clock=clock)
        self.webhooks_enabled = webhooks_enabled
        self.webhook_targets = TargetPolicy()  # where webhooks may go (the operator's rules)
        self._carrier_keys: dict[int, tuple[VerifyKey, str]] = {}
        # PostgreSQL payments wait on the network: one thread per pooled connection
        self._pay_executor = ThreadPoolExecutor(
            max_workers=int(os.environ.get("SAFESCAN_PAY_THREADS", "4")),
            thread_name_prefix="safescan-pay",
        )
        self._crl_cache: dict[str, RevocationList] = {}
        # serials and revocations journaled in the checkpoint file (when serving)
        self.journal: Journal | None = None
        # merchant requests per second and burst, one bucket per merchant in the database
        # (shared by every API process); rate 0 = no limit
        self.merchant_rate: tuple[float, float] = (100.0, 200.0)

    def now(self) -> int:
        """Server time, unix seconds."""
        return int(self.clock())

    # --- setup ---------------------------------------------------------------------------

    def bootstrap(self) -> str:
        """First-time setup after migrations: key records, audit chains; returns the admin token."""
        now = self.now()
        token = admin_tokens.new_token()

        def tx(conn: Connection) -> None:
            audit.create_heads(conn)
            _insert_ignore(conn, Counter, {"name": CRL_COUNTER, "value": 0})
            self._register_keys(conn, now)
            token_id = admin_tokens.insert_token(conn, token, now)
            audit.append(
                conn,
                at=now,
                actor="system",
                action="institution.init",
                entity="institution",
                data={
                    "root_kid": self.keys.root_kid,
                    "root_public_key": b64e(self.keys.root.public_key.raw),
                    "admin_token_id": token_id,
                    "admin_token_hash": self.keys.token_hash(token),
                },
            )

        self.db.write(tx)
        return token

    def register_keys(self) -> None:
        """Record the public halves of the current keys (after a rotation)."""
        self.db.write(lambda conn: self._register_keys(conn, self.now()))

    def _register_keys(self, conn: Connection, now: int) -> None:
        _insert_ignore(
            conn,
            InstitutionKey,
            {
                "purpose": "root",
                "kid": self.keys.root_kid,
                "public_key": self.keys.root.public_key.raw,
                "created_at": now,
            },
        )
        for key in self.keys.scheme.keys.values():
            inserted = _insert_ignore(
                conn,
                InstitutionKey,
                {
                    "purpose": "scheme",
                    "kid": key.kid,
                    "public_key": key.public.raw,
                    "created_at": now,
                    "retire_at": key.retire_at,
                },
            )
            if not inserted:
                conn.execute(
                    update(InstitutionKey)
                    .where(InstitutionKey.purpose == "scheme", InstitutionKey.kid == key.kid)
                    .values(retire_at=key.retire_at)
                )
            audit.append(
                conn,
                at=now,
                actor="system",
                action="key.register",
                entity="institution",
                data={
                    "purpose": "scheme",
                    "kid": key.kid,
                    "retire_at": key.retire_at,
                    "public_key": b64e(key.public.raw),
                },
            )

    def public_keys(self) -> dict[str, Any]:
        """Public trust anchors: root signing keys and current scheme public keys."""
        now = self.now()
        current = self.scheme_keys.current_epoch(now)
        static = self.keys.scheme.current(now).kid
        # static and live epoch keys, current = the epoch's: terminals seal dynamic codes to it
        signed = scheme_key_list(self.scheme_keys, self.keys.root, self.keys.root_kid, now)
        return {
            "root_keys": [
                {"kid": k, "public_key": b64e(v.raw)}
                for k, v in self.trust.institution_keys.items()
            ],
            # dynamic codes are sealed to the "current" key (the current epoch's); static codes
            # to the "static" one; every live key still opens codes until its retire_at
            "scheme_keys": [
                {
                    "kid": k.kid,
                    "public_key": b64e(k.public.raw),
                    "retire_at": k.retire_at,
                    "current": k.kid == current.key.kid,
                    "use": "dynamic" if is_epoch_kid(k.kid) else "static",
                    "current_static": k.kid == static,
                }
                for k in sorted(self.scheme_keys.keys.values(), key=lambda k: k.kid)
                if not k.is_retired(now)
            ],
            # the same keys signed under the root key: terminals cache it to seal offline
            "scheme_key_list": b64e(signed.to_bytes()),
            "epoch": current.epoch,
        }

    # --- authentication ---------------------------------------------------------------------

    def check_admin(self, token: str | None) -> None:
        """Accept a valid administrator bearer token; raise :class:`Unauthenticated` otherwise."""
        if not token:
            raise Unauthenticated("an administrator token is required (Authorization: Bearer ...)")
        digest = self.keys.token_hash(token)
        found = self.db.read(
            lambda c: c.execute(
                select(AdminToken.id).where(AdminToken.token_hash == digest)
            ).scalar_one_or_none()
        )
        if found is None:
            raise Unauthenticated("the administrator token is not valid")

    def authenticate_merchant(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> str:
        """Verify a merchant's request signature (over its Idempotency-Key too) and record its
        nonce (see :mod:`.nonces`); returns the merchant id."""
        now = self.now()
        mid, ts, nonce, sig = merchant_auth.parse_headers(headers, now=now)
        idem_key = merchant_auth.idempotency_key(headers)
        row = self.db.read(
            lambda c: c.execute(
                select(MerchantRow.api_public_key, MerchantRow.status).where(MerchantRow.id == mid)
            ).one_or_none()
        )
        if row is None:
            raise Unauthenticated("unknown merchant")
        merchant_auth.verify_signature(
            VerifyKey(row.api_public_key), mid, method, path, ts, nonce, sig, body, idem_key
        )
        if row.status != "active":
            raise Forbidden("this merchant has been revoked")

        rate, burst = self.merchant_rate
        now_ms = int(self.clock() * 1000)

        def tx(conn: Connection) -> tuple[bool, bool]:
            fresh = nonces.record(conn, self.elapsed, mid, nonce, int(ts), now)
            if not fresh or rate <= 0:
                return fresh, True
            bucket = {
                "mid": mid,
                "now_ms": now_ms,
                "rate_milli": max(1, round(rate * 1000)),
                "burst_milli": max(1000, round(burst * 1000)),
            }
            sql.run(conn, sql.RATE_BUCKET_CREATE, bucket)
            return True, sql.run(conn, sql.TAKE_TOKEN, bucket).rowcount == 1

        # the nonce is recorded even when the request is then refused for its rate: a
        # refused request can never be replayed into an accepted one
        fresh, within_rate = self.db.write(tx)
        if not fresh:
            raise ReplayedRequest("this request nonce was already used (replay)")
        if not within_rate:
            raise RateLimited(
                f"more than {rate:g} requests per second for this merchant; slow down"
            )
        return mid

    def purge_nonces(self) -> int:
        """Forget nonces kept for the whole replay window on the elapsed clock (never on the
        wall clock), raising each merchant's floor (see :mod:`.nonces`)."""
        return self.db.write(lambda c: nonces.purge(c, self.elapsed))

    # --- merchants ---------------------------------------------------------------------------

    def create_merchant(
        self,
        *,
        name: str,
        city: str,
        country: str,
        mcc: int,
        settlement_account: str,
        api_public_key: bytes | None,
        webhook_url: str | None,
        allow_protected_name: bool = False,
    ) -> tuple[dict[str, Any], str | None]:
        """Onboard a merchant. Without ``api_public_key`` a key pair is generated and the private
        seed is returned **once** (base64); the institution keeps only the public key."""
        mid = new_id("M", 9)
        settlement_account = guards.text(settlement_account, param="settlement_account")
        try:
            ident = Merchant(mid, name, city, country, mcc).validated()
        except SafescanError as exc:
            raise InvalidRequest(exc.message) from None
        others = self.db.read(
            lambda c: [str(n) for n in c.execute(select(MerchantRow.name)).scalars()]
        )
        guards.merchant_name(ident.name, others, allow_protected=allow_protected_name)
        secret_b64: str | None = None
        if api_public_key is None:
            seed = secrets.token_bytes(32)
            api_public_key = SigningKey.from_seed(seed).public_key.raw
            secret_b64 = b64e(seed)
        guards.public_key(api_public_key, param="api_public_key")
        if webhook_url is not None:
            webhook_url = self.webhook_targets.check_registration(webhook_url)
        now = self.now()
        values = {
            "id": mid,
            "name": ident.name,
            "city": ident.city,
            "country": ident.country,
            "mcc": ident.mcc,
            "settlement_account": settlement_account,
            "api_public_key": api_public_key,
            "webhook_url": webhook_url,
            "status": "active",
            "created_at": now,
        }

        def tx(conn: Connection) -> None:
            conn.execute(insert(MerchantRow).values(**values))
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="merchant.create",
                entity=f"merchant:{mid}",
                data={k: v for k, v in values.items() if k != "api_public_key"}
                | {"api_public_key": b64e(api_public_key)},
            )

        self.db.write(tx)
        return self.get_merchant(mid), secret_b64

    def get_merchant(self, mid: str) -> dict[str, Any]:
        """A merchant's profile."""
        row = self.db.read(
            lambda c: c.execute(select(MerchantRow).where(MerchantRow.id == mid)).one_or_none()
        )
        if row is None:
            raise NotFound(f"no merchant {mid}", param="merchant_id")
        return _merchant_dict(row)

    def _merchant_identity(self, conn: Connection, mid: str) -> Merchant:
        row = conn.execute(select(MerchantRow).where(MerchantRow.id == mid)).one_or_none()
        if row is None:
            raise NotFound(f"no merchant {mid}")
        if row.status != "active":
            raise Forbidden("this merchant has been revoked")
        return Merchant(row.id, row.name, row.city, row.country, row.mcc)

    def set_webhook(self, mid: str, url: str | None) -> dict[str, Any]:
        """Set (or clear) the merchant's webhook URL (checked: see :mod:`.webhook_targets`)."""
        if url is not None:
            url = self.webhook_targets.check_registration(url)
        now = self.now()

        def tx(conn: Connection) -> None:
            conn.execute(update(MerchantRow).where(MerchantRow.id == mid).values(webhook_url=url))
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="merchant.webhook",
                entity=f"merchant:{mid}",
                data={"webhook_url": url},
            )

        self.db.write(tx)
        return self.get_merchant(mid)

    def revoke_merchant(self, mid: str) -> dict[str, Any]:
        """Revoke a merchant: its requests are refused and its code certificates revoked."""
        now = self.now()

        def tx(conn: Connection) -> None:
            res = conn.execute(
                update(MerchantRow)
                .where(MerchantRow.id == mid, MerchantRow.status == "active")
                .values(status="revoked")
            )
            if res.rowcount != 1:
                exists = conn.execute(select(MerchantRow.id).where(MerchantRow.id == mid)).first()
                if exists is None:
                    raise NotFound(f"no merchant {mid}", param="merchant_id")
                raise Conflict("the merchant is already revoked")
            serials = self._revoke_certs(conn, Role.MERCHANT, mid, now)
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="merchant.revoke",
                entity=f"merchant:{mid}",
                data={"revoked_certificates": serials, "crl_sequence": self._crl_sequence(conn)},
            )

        self.db.write(tx)
        return self.get_merchant(mid)

    def _revoke_certs(self, conn: Connection, role: Role, subject: str, now: int) -> list[int]:
        serials = list(
            conn.execute(
                select(CertificateRow.serial).where(
                    CertificateRow.role == int(role),
                    CertificateRow.subject == subject,
                    CertificateRow.revoked_at.is_(None),
                )
            ).scalars()
        )
        if serials:
            conn.execute(
                update(CertificateRow)
                .where(CertificateRow.serial.in_(serials))
                .values(revoked_at=now)
            )
            conn.execute(
                update(Counter).where(Counter.name == CRL_COUNTER).values(value=Counter.value + 1)
            )
            if self.journal is not None:  # never a sequence a restored copy already used
                self.journal.revocation(conn, role, subject, serials)
        return serials

    @staticmethod
    def _crl_sequence(conn: Connection) -> int:
        """The revocation list's sequence number, as this transaction leaves it."""
        return int(
            conn.execute(select(Counter.value).where(Counter.name == CRL_COUNTER)).scalar_one()
        )

    def certify_merchant_key(self, mid: str, public_key: bytes, valid_days: int) -> Certificate:
        """Issue a merchant code-signing certificate (for merchant-signed codes)."""
        now = self.now()
        key = guards.public_key(public_key, param="public_key")

        if not 1 <= valid_days <= MAX_MERCHANT_CERT_DAYS:
            raise InvalidRequest(
                f"valid_days must be 1-{MAX_MERCHANT_CERT_DAYS}", param="valid_days"
            )

        def tx(conn: Connection) -> Certificate:
            # the identity the customer will be shown comes from the merchant's record here,
            # never from the request: the certificate (v2) carries it
            identity = self._merchant_identity(conn, mid)
            live = conn.execute(
                select(func.count()).where(
                    CertificateRow.role == int(Role.MERCHANT),
                    CertificateRow.subject == mid,
                    CertificateRow.revoked_at.is_(None),
                    CertificateRow.not_after > now,
                )
            ).scalar_one()
            if live >= MAX_LIVE_MERCHANT_CERTS:
                raise CertificateLimit(
                    f"a merchant holds at most {MAX_LIVE_MERCHANT_CERTS} live code-signing"
                    " certificates; let one expire first",
                    param="public_key",
                )
            cert = self._certify(
                conn, Role.MERCHANT, lambda _serial: mid, key, now, valid_days, identity
            )
            serial = cert.serial
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="certificate.issue",
                entity=f"merchant:{mid}",
                data={"serial": serial, "role": "merchant"},
            )
            return cert

        return self.db.write(tx)

    def _certify(
        self,
        conn: Connection,
        role: Role,
        subject_for: Callable[[int], str],
        key: VerifyKey,
        now: int,
        days: int,
        merchant: Merchant | None = None,
    ) -> Certificate:
        """Allocate a serial (a certificate row), issue the certificate under the root key and
        store it; ``subject_for(serial)`` names the subject (a carrier's depends on its serial);
        a merchant certificate certifies the ``merchant`` identity."""
        not_before, not_after = now - 60, now + days * 86400
        serial = allocate_serial(conn, self.journal, role, subject_for)
        if serial > MAX_SERIAL:
            raise Conflict("no certificate serials left")
        conn.execute(
            insert(CertificateRow).values(
                serial=serial,
                role=int(role),
                subject="pending",
                public_key=key.raw,
                not_before=not_before,
                not_after=not_after,
                created_at=now,
            )
        )
        subject = subject_for(serial)
        cert = issue_certificate(
            self.keys.root,
            self.keys.root_kid,
            serial=serial,
            role=role,
            subject=subject,
            public_key=key,
            not_before=not_before,
            not_after=not_after,
            merchant=merchant,
        )
        conn.execute(
            update(CertificateRow)
            .where(CertificateRow.serial == serial)
            .values(subject=subject, cert=cert.to_bytes())
        )
        return cert

    # --- customers and carriers --------------------------------------------------------------

    def create_customer(self, name: str) -> dict[str, Any]:
        """Open a customer account holder."""
        name = guards.name(name, param="name")
        cid = new_id("C", 11)
        now = self.now()

        def tx(conn: Connection) -> None:
            conn.execute(
                insert(CustomerRow).values(id=cid, name=name, status="active", created_at=now)
            )
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="customer.create",
                entity=f"customer:{cid}",
                data={"name": name},
            )

        self.db.write(tx)
        return self.get_customer(cid)

    def get_customer(self, cid: str) -> dict[str, Any]:
        """A customer with balances (by ISO 4217 alpha code) and carriers."""

        def q(conn: Connection) -> dict[str, Any]:
            row = conn.execute(select(CustomerRow).where(CustomerRow.id == cid)).one_or_none()
            if row is None:
                raise NotFound(f"no customer {cid}", param="customer_id")
            bal = ledger.balances(conn, ledger.CUSTOMER, cid)
            carriers = conn.execute(
                select(CarrierRow.serial, CarrierRow.status, CarrierRow.last_counter).where(
                    CarrierRow.customer_id == cid
                )
            ).all()
            return {
                "id": row.id,
                "name": row.name,
                "status": row.status,
                "created_at": row.created_at,
                "balances": [
                    {"currency": lookup_currency(c).alpha, "amount": a}
                    for c, a in sorted(bal.items())
                ],
                "carriers": [
                    {"serial": s, "status": st, "last_counter": lc} for s, st, lc in carriers
                ],
            }

        return self.db.read(q)

    def fund_customer(
        self, cid: str, currency_code: str | int, amount: int, *, actor: str = "admin"
    ) -> dict[str, Any]:
        """Credit a customer's account from the institution's funding account."""
        try:
            cur = lookup_currency(currency_code).numeric
        except SafescanError as exc:
            raise InvalidRequest(exc.message, param="currency") from None
        amount = guards.amount(amount)
        now = self.now()
        ref = new_id("fund_", 16)

        def tx(conn: Connection) -> None:
            exists = conn.execute(select(CustomerRow.id).where(CustomerRow.id == cid)).first()
            if exists is None:
                raise NotFound(f"no customer {cid}", param="customer_id")
            cust = ledger.ensure_account(conn, ledger.CUSTOMER, cid, cur, now)
            fund = ledger.ensure_account(conn, ledger.FUNDING, ledger.INSTITUTION, cur, now)
            ledger.post_transfer(
                conn,
                debit=fund,
                credit=cust,
                amount=amount,
                currency=cur,
                kind="funding",
                ref=ref,
                now=now,
                checked=frozenset({cust}),
            )
            audit.append(
                conn,
                at=now,
                actor=actor,
                action="customer.fund",
                entity=f"customer:{cid}",
                data={"currency": cur, "amount": amount, "ref": ref},
            )

        self.db.write(tx)
        return self.get_customer(cid)

    def issue_enrollment_token(self, cid: str, ttl: int = ENROLLMENT_TTL) -> dict[str, Any]:
        """A single-use token with which the customer's wallet enrolls one key carrier."""
        token = "enr_" + secrets.token_urlsafe(24)
        now = self.now()

        def tx(conn: Connection) -> None:
            row = conn.execute(select(CustomerRow.status).where(CustomerRow.id == cid)).first()
            if row is None:
                raise NotFound(f"no customer {cid}", param="customer_id")
            conn.execute(
                insert(EnrollmentToken).values(
                    token_hash=self.keys.token_hash(token), customer_id=cid, expires_at=now + ttl
                )
            )
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="enrollment.token",
                entity=f"customer:{cid}",
                data={"expires_at": now + ttl, "token_hash": self.keys.token_hash(token)},
            )

        self.db.write(tx)
        return {"token": token, "customer_id": cid, "expires_at": now + ttl}

    def enroll_carrier(
        self,
        token: str,
        signing_public_key: bytes,
        transport_public_key: bytes,
        attestation: bytes | None = None,
    ) -> dict[str, Any]:
        """Register an attested key carrier (see :mod:`.enrollment`): certificate, sealed
        provisioning bundle and first key update; refused without a valid attestation."""
        return enrollment.enroll(self, token, signing_public_key, transport_public_key, attestation)

    def forget_carriers(self) -> None:
        """Drop the cached carrier keys (after carriers were revoked outside revoke_carrier)."""
        self._carrier_keys.clear()

    def carrier_key_update(self, serial: int, from_epoch: int) -> dict[str, Any]:
        """The KEY UPDATE bringing a carrier to the current scheme-key epoch (or None)."""
        return enrollment.issue_key_update(self, serial, from_epoch)

    def revoke_carrier(self, serial: int) -> dict[str, Any]:
        """Revoke a key carrier: its authorizations are refused from now on."""
        now = self.now()

        def tx(conn: Connection) -> None:
            res = conn.execute(
                update(CarrierRow)
                .where(CarrierRow.serial == serial, CarrierRow.status == "active")
                .values(status="revoked")
            )
            if res.rowcount != 1:
                exists = conn.execute(
                    select(CarrierRow.serial).where(CarrierRow.serial == serial)
                ).first()
                if exists is None:
                    raise NotFound(f"no carrier {serial}", param="serial")
                raise Conflict("the carrier is already revoked")
            serials = self._revoke_certs(conn, Role.CARRIER, carrier_subject(serial), now)
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="carrier.revoke",
                entity=f"carrier:{serial}",
                data={"revoked_certificates": serials, "crl_sequence": self._crl_sequence(conn)},
            )

        self.db.write(tx)
        self._carrier_keys.pop(serial, None)
        return {"serial": serial, "status": "revoked"}

    def revocation_list(self, scope: str = "all") -> RevocationList:
        """The current signed revocation list (re-signed only when it changes).

        A revoked merchant is one *subject* entry (its id), covering every certificate it was
        ever given; other revoked certificates (carriers') are listed by serial. Entries stay
        until the certificates they cover have all expired. ``scope="merchant"`` is the list
        for key carriers: merchant entries only (cards check merchant certificates, not
        carriers), so other parties' revocations cannot fill a card.
        """
        if scope not in ("all", "merchant"):
            raise InvalidRequest("scope is all or merchant", param="scope")
        now = self.now()

        def q(conn: Connection) -> tuple[int, list[str], list[int]]:
            seq = conn.execute(
                select(Counter.value).where(Counter.name == CRL_COUNTER)
            ).scalar_one()
            revoked_merchants = set(
                conn.execute(select(MerchantRow.id).where(MerchantRow.status != "active")).scalars()
            )
            rows = conn.execute(
                select(CertificateRow.serial, CertificateRow.role, CertificateRow.subject).where(
                    CertificateRow.revoked_at.is_not(None), CertificateRow.not_after > now
                )
            ).all()
            subjects, serials = set(), []
            for serial, role, subject in rows:
                if role == int(Role.MERCHANT) and subject in revoked_merchants:
                    subjects.add(str(subject))  # one entry covers all of them
                elif scope == "all" or role == int(Role.MERCHANT):
                    serials.append(int(serial))
            return int(seq), sorted(subjects), serials

        seq, subjects, serials = self.db.read(q)
        cached = self._crl_cache.get(scope)
        if cached is not None and cached.sequence == seq:
            return cached
        crl = RevocationList.issue(
            self.keys.root,
            self.keys.root_kid,
            sequence=seq,
            issued_at=now,
            serials=frozenset(serials),
            subjects=frozenset(subjects),
        )
        self._crl_cache[scope] = crl
        return crl

    # --- orders and codes --------------------------------------------------------------------

    def create_order(
        self,
        mid: str,
        *,
        items: list[tuple[str, int, int]],
        currency_code: str | int,
        expires_in: int,
        reference: str | None,
        idempotency_key: str | None,
    ) -> Stored:
        """Precreate an order and seal its dynamic code (institution-signed)."""
        items = guards.items(items)
        reference = guards.optional_text(reference, param="reference")
        try:
            cur = lookup_currency(currency_code).numeric
        except SafescanError as exc:
            raise InvalidRequest(exc.message, param="currency") from None
        if not 1 <= expires_in <= MAX_DYNAMIC_VALIDITY:
            raise InvalidRequest(
                f"expires_in must be 1-{MAX_DYNAMIC_VALIDITY} seconds", param="expires_in"
            )
        req = order_request(mid, idempotency_key, items, cur, expires_in, reference)
        now = self.now()
        order_id = new_id("", ORDER_ID_CHARS)
        merchant = self.db.read(lambda c: self._merchant_identity(c, mid))
        try:
            code = DynamicCode(
                merchant=merchant,
                order_id=order_id,
                items=tuple(LineItem(n, q, p) for n, q, p in items),
                total=sum(q * p for _, q, p in items),
                currency=cur,
                issued_at=now,
                expires_at=now + expires_in,
                nonce=secrets.token_bytes(8),
            ).validated()
        except SafescanError as exc:
            raise InvalidRequest(exc.message, param="items") from None
        binary = seal(code, self.issuer, self.scheme_keys.current(now).public)
        text = encode_text(binary)
        digest = hashlib.sha256(binary).digest()
        items_json = canonical_json([[i.name, i.quantity, i.unit_price] for i in code.items])

        body = {
            "order_id": order_id,
            "merchant_id": mid,
            "state": "CREATED",
            "total": code.total,
            "currency": cur,
            "expires_at": code.expires_at,
            "reference": reference,
            "code": text,
            "code_bytes": len(binary),
        }
        result = Stored(201, body)

        def tx(conn: Connection) -> Stored:
            self._merchant_identity(conn, mid)
            ledger.ensure_account(conn, ledger.MERCHANT, mid, cur, now)
            conn.execute(
                insert(OrderRow).values(
                    merchant_id=mid,
                    order_id=order_id,
                    kind="dynamic",
                    state="CREATED",
                    reference=reference,
                    currency=cur,
                    total=code.total,
                    items=items_json,
                    code_digest=digest,
                    created_at=now,
                    expires_at=code.expires_at,
                    paid_amount=0,
                    refunded_amount=0,
                )
            )
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="order.create",
                entity=f"order:{mid}:{order_id}",
                data={
                    "total": code.total,
                    "currency": cur,
                    "expires_at": code.expires_at,
                    "reference": reference,
                    "code_digest": digest.hex(),
                    "items_sha256": hashlib.sha256(items_json.encode()).hexdigest(),
                },
            )
            return result

        return idempotency.execute(self.db, req, now, tx, answer=result)

    def precreate_orders(
        self, mid: str, orders: list[tuple[list[tuple[str, int, int]], str | int]], expires_in: int
    ) -> list[dict[str, Any]]:
        """Bulk precreation (one transaction, one audit entry naming every order): for load tests
        and merchants that print batches of codes. Returns order id, code and total per order."""
        now = self.now()
        merchant = self.db.read(lambda c: self._merchant_identity(c, mid))
        scheme = self.scheme_keys.current(now).public
        rows: list[dict[str, Any]] = []
        out: list[dict[str, Any]] = []
        for items, currency_code in orders:
            cur = lookup_currency(currency_code).numeric
            order_id = new_id("", ORDER_ID_CHARS)
            code = DynamicCode(
                merchant=merchant,
                order_id=order_id,
                items=tuple(LineItem(n, q, p) for n, q, p in items),
                total=sum(q * p for _, q, p in items),
                currency=cur,
                issued_at=now,
                expires_at=now + expires_in,
                nonce=secrets.token_bytes(8),
            ).validated()
            binary = seal(code, self.issuer, scheme)
            rows.append(
                {
                    "merchant_id": mid,
                    "order_id": order_id,
                    "kind": "dynamic",
                    "state": "CREATED",
                    "reference": None,
                    "currency": cur,
                    "total": code.total,
                    "items": canonical_json(
                        [[i.name, i.quantity, i.unit_price] for i in code.items]
                    ),
                    "code_digest": hashlib.sha256(binary).digest(),
                    "created_at": now,
                    "expires_at": code.expires_at,
                    "paid_amount": 0,
                    "refunded_amount": 0,
                }
            )
            out.append(
                {
                    "order_id": order_id,
                    "code": encode_text(binary),
                    "total": code.total,
                    "currency": cur,
                }
            )

        def tx(conn: Connection) -> None:
            for cur in {r["currency"] for r in rows}:
                ledger.ensure_account(conn, ledger.MERCHANT, mid, cur, now)
            conn.execute(insert(OrderRow), rows)
            ids = [r["order_id"] for r in rows]
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="order.create_batch",
                entity=f"merchant:{mid}",
                data={
                    "count": len(ids),
                    "orders_sha256": hashlib.sha256(",".join(ids).encode()).hexdigest(),
                    "rows_sha256": audit.batch_rows_sha256(rows),
                },
            )

        self.db.write(tx)
        return out

    def create_static_code(
        self, mid: str, *, currency_code: str | int | None, valid_days: int
    ) -> dict[str, Any]:
        """Seal a static (printed) merchant code; the customer enters the amount."""
        cur: int | None = None
        if currency_code is not None:
            try:
                cur = lookup_currency(currency_code).numeric
            except SafescanError as exc:
                raise InvalidRequest(exc.message, param="currency") from None
        if not 1 <= valid_days * 86400 <= MAX_STATIC_VALIDITY:
            raise InvalidRequest("valid_days is out of range", param="valid_days")
        now = self.now()
        merchant = self.db.read(lambda c: self._merchant_identity(c, mid))
        code = StaticCode(merchant, cur, now, now + valid_days * 86400)
        # printed codes live for years: sealed to the long-lived static-code key, not an epoch
        binary = seal(code, self.issuer, self.keys.scheme.current(now).public)
        return {
            "merchant_id": mid,
            "currency": cur,
            "expires_at": code.expires_at,
            "code": encode_text(binary),
            "code_bytes": len(binary),
        }

    def get_order(self, mid: str, order_id: str) -> dict[str, Any]:
        """An order (an unpaid order past its expiry is moved to EXPIRED first)."""
        row = self.db.read(lambda c: self._order_row(c, mid, order_id))
        if row.state == "CREATED" and self.now() >= row.expires_at:
            self.expire_orders(only=(mid, order_id))
            row = self.db.read(lambda c: self._order_row(c, mid, order_id))
        return _order_dict(row)

    @staticmethod
    def _order_pk(conn: Connection, mid: str, order_id: str) -> int | None:
        pk: int | None = conn.execute(
            select(OrderRow.pk).where(OrderRow.merchant_id == mid, OrderRow.order_id == order_id)
        ).scalar_one_or_none()
        return pk

    @staticmethod
    def _order_row(conn: Connection, mid: str, order_id: str) -> Any:
        row = conn.execute(
            select(OrderRow).where(OrderRow.merchant_id == mid, OrderRow.order_id == order_id)
        ).one_or_none()
        if row is None:
            raise NotFound(f"no order {order_id} for this merchant", param="order_id")
        return row

    def close_order(self, mid: str, order_id: str, code: str | None = None) -> dict[str, Any]:
        """Close an unpaid order: its code can no longer be paid. ``code``: a code the merchant's
        terminal sealed itself, unknown here until paid, is withdrawn by recording its order
        closed (``merchant_sealing.withdrawn_order``)."""
        now = self.now()
        opened = None if code is None else open_code(code, self.scheme_keys, self.trust, now=now)

        def tx(conn: Connection) -> None:
            res = conn.execute(
                update(OrderRow)
                .where(
                    OrderRow.merchant_id == mid,
                    OrderRow.order_id == order_id,
                    OrderRow.state == "CREATED",
                    OrderRow.expires_at > now,
                )
                .values(state="CLOSED")
            )
            closed = res.rowcount == 1
            if not closed and opened is not None and self._order_pk(conn, mid, order_id) is None:
                insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                row = withdrawn_order(opened, mid, order_id, now)
                closed = (
                    conn.execute(
                        insert_(OrderRow)
                        .values(**row)
                        .on_conflict_do_nothing()
                        .returning(OrderRow.pk)
                    ).scalar()
                    is not None
                )
                if closed:  # the order is recorded here for the first time: log its creation
                    audit.append(
                        conn,
                        at=now,
                        actor=f"merchant:{mid}",
                        action="order.create",
                        entity=f"order:{mid}:{order_id}",
                        data={
                            "total": row["total"],
                            "currency": row["currency"],
                            "expires_at": row["expires_at"],
                            "reference": None,
                            "code_digest": row["code_digest"].hex(),
                            "items_sha256": hashlib.sha256(row["items"].encode()).hexdigest(),
                            "withdrawn": True,
                        },
                    )
            if not closed:
                row = self._order_row(conn, mid, order_id)
                state = "EXPIRED" if row.state == "CREATED" else row.state
                raise Conflict(f"the order is {state} and cannot be closed", param="order_id")
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="order.close",
                entity=f"order:{mid}:{order_id}",
                data={"state": "CLOSED"},
            )
            new_event(
                conn,
                merchant_id=mid,
                type_="order.closed",
                data={"order_id": order_id},
                now=now,
                webhook=self.webhooks_enabled,
            )

        self.db.write(tx)
        return self.get_order(mid, order_id)

    def expire_orders(self, *, only: tuple[str, str] | None = None, limit: int = 500) -> int:
        """Move unpaid orders past their expiry to EXPIRED (with audit entries and events)."""
        now = self.now()

        def tx(conn: Connection) -> int:
            q = select(OrderRow.pk, OrderRow.merchant_id, OrderRow.order_id).where(
                OrderRow.state == "CREATED", OrderRow.expires_at <= now
            )
            if only is not None:
                q = q.where(OrderRow.merchant_id == only[0], OrderRow.order_id == only[1])
            n = 0
            for pk, mid, oid in conn.execute(q.limit(limit)).all():
                res = conn.execute(
                    update(OrderRow)
                    .where(OrderRow.pk == pk, OrderRow.state == "CREATED")
                    .values(state="EXPIRED")
                )
                if res.rowcount == 1:
                    n += 1
                    audit.append(
                        conn,
                        at=now,
                        actor="system",
                        action="order.expire",
                        entity=f"order:{mid}:{oid}",
                        data={"state": "EXPIRED"},
                    )
                    new_event(
                        conn,
                        merchant_id=mid,
                        type_="order.expired",
                        data={"order_id": oid},
                        now=now,
                        webhook=self.webhooks_enabled,
                    )
            return n

        return self.db.write(tx)

    def list_orders(self, mid: str, *, limit: int, after: str | None) -> dict[str, Any]:
        """The merchant's orders, newest first; ``after`` is the last order id of the previous
        page."""

        def q(conn: Connection) -> dict[str, Any]:
            stmt = select(OrderRow).where(OrderRow.merchant_id == mid)
            if after is not None:
                pivot = conn.execute(
                    select(OrderRow.pk).where(
                        OrderRow.merchant_id == mid, OrderRow.order_id == after
                    )
                ).scalar_one_or_none()
                if pivot is None:
                    raise NotFound(f"no order {after} for this merchant", param="after")
                stmt = stmt.where(OrderRow.pk < pivot)
            rows = conn.execute(stmt.order_by(OrderRow.pk.desc()).limit(limit + 1)).all()
            return {
                "orders": [_order_dict(r) for r in rows[:limit]],
                "has_more": len(rows) > limit,
            }

        return self.db.read(q)

    def code_status(self, code_text: str) -> dict[str, Any]:
        """What a wallet may learn before asking the customer anything: is this exact code
        still payable? (Only the state of the code the caller holds; no amounts, no payer.)"""
        now = self.now()
        opened = open_code(code_text, self.scheme_keys, self.trust, now=now)
        code = opened.code
        mid = code.merchant.id

        def q(conn: Connection) -> dict[str, Any]:
            status = conn.execute(
                select(MerchantRow.status).where(MerchantRow.id == mid)
            ).scalar_one_or_none()
            merchant_status = "active" if status == "active" else "revoked"
            if opened.certificate is not None and certificate_problem(conn, opened.certificate):
                merchant_status = "revoked"
            out: dict[str, Any] = {
                "state": "payable",
                "merchant_status": merchant_status,
                "order_state": None,
                "expires_at": code.expires_at,
            }
            if merchant_status != "active" or status is None:
                out["state"] = "unknown" if status is None else "revoked"
                return out
            if not isinstance(code, DynamicCode):
                return out
            row = conn.execute(
                select(OrderRow.state, OrderRow.expires_at, OrderRow.code_digest).where(
                    OrderRow.merchant_id == mid, OrderRow.order_id == code.order_id
                )
            ).first()
            if row is None or row.code_digest != opened.digest:
                out["state"] = "unknown" if opened.issuer == "institution" else "payable"
                return out
            state = row.state
            if state == "CREATED" and row.expires_at <= now:
                state = "EXPIRED"
            out["order_state"] = state
            out["expires_at"] = row.expires_at
            out["state"] = {
                "CREATED": "payable",
                "PAID": "paid",
                "PARTIALLY_REFUNDED": "paid",
                "REFUNDED": "refunded",
                "CLOSED": "closed",
                "EXPIRED": "expired",
            }[state]
            return out

        return self.db.read(q)

    # --- payments ----------------------------------------------------------------------------

    def _carrier_key(self, serial: int) -> tuple[VerifyKey, str]:
        cached = self._carrier_keys.get(serial)
        if cached is not None:
            return cached
        if serial > MAX_SERIAL:
            raise CarrierRevoked(f"key carrier {serial} is not registered here")
        row = self.db.read(
            lambda c: c.execute(
                select(
                    CarrierRow.signing_public_key, CarrierRow.customer_id, CarrierRow.status
                ).where(CarrierRow.serial == serial)
            ).first()
        )
        if row is None:
            raise CarrierRevoked(f"key carrier {serial} is not registered here")
        if row.status != "active":
            raise CarrierRevoked(f"key carrier {serial} has been revoked")
        value = (VerifyKey(row.signing_public_key), row.customer_id)
        self._carrier_keys[serial] = value  # immutable per serial; status is re-checked in the tx
        return value

    def _prepare_payment(
        self, code_text: str, authorization: bytes, key: str | None
    ) -> tuple[Stored | None, _PaymentPlan | None]:
        """Everything before the transaction: parse, the key's stored answer, open and verify,
        match, and the payment's records (receipt signed, event and audit entry written out)."""
        auth = Authorization.from_bytes(authorization)
        req = payment_request(auth.carrier_serial, code_text, authorization, key)
        if req is not None:
            stored = self.db.read(lambda c: idempotency.lookup(c, req))
            if stored is not None:
                return idempotency.replay(stored), None
        now = self.now()
        opened = open_code(code_text, self.scheme_keys, self.trust, now=now)
        carrier_key, customer_id = self._carrier_key(auth.carrier_serial)
        auth.verify(carrier_key)
        self._match(opened, auth)
        return None, self._plan_payment(opened, auth, customer_id, req, now)

    def pay(self, code_text: str, authorization: bytes, idempotency_key: str | None) -> Stored:
        """Verify a carrier-signed authorization for a code and, in one transaction, pay.
        With an Idempotency-Key, every retry gets this payment's answer (or "in progress")."""
        stored, plan = self._prepare_payment(code_text, authorization, idempotency_key)
        if stored is not None:
            return stored
        assert plan is not None
        if plan.fast and not self.db.is_sqlite:
            return idempotency.finish(
                self.db, plan.idem, plan.now, lambda: self._pay_order_in_one_statement(plan)
            )
        work = idempotency.transaction(plan.idem, plan.now, self._payment_tx(plan), plan.result)
        return idempotency.finish(self.db, plan.idem, plan.now, lambda: self.db.write(work))

    async def pay_async(
        self, code_text: str, authorization: bytes, idempotency_key: str | None
    ) -> Stored:
        """:meth:`pay` for an event loop: on SQLite the verification runs inline and the
        group-committed transaction is awaited; on PostgreSQL it all runs in a worker thread."""
        if not self.db.is_sqlite:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._pay_executor, self.pay, code_text, authorization, idempotency_key
            )
        stored, plan = self._prepare_payment(code_text, authorization, idempotency_key)
        if stored is not None:
            return stored
        assert plan is not None
        work = idempotency.transaction(plan.idem, plan.now, self._payment_tx(plan), plan.result)
        return await idempotency.finish_async(
            self.db, plan.idem, plan.now, self.db.write_async(work)
        )

    @staticmethod
    def _match(opened: OpenedCode, auth: Authorization) -> None:
        code = opened.code
        if auth.code_digest != opened.digest:
            raise PaymentRefused(
                "the authorization was made for another code", param="authorization"
            )
        if auth.merchant_id != code.merchant.id:
            raise PaymentRefused("the authorization names another merchant", param="authorization")
        if isinstance(code, DynamicCode):
            if auth.order_id != code.order_id:
                raise PaymentRefused("the authorization names another order", param="authorization")
            if auth.amount != code.total or auth.currency != code.currency:
                raise PaymentRefused(
                    "the authorized amount or currency differs from the code's",
                    param="authorization",
                )
        else:
            if auth.order_id != "":
                raise PaymentRefused(
                    "a static-code authorization has no order id", param="authorization"
                )
            if code.currency is not None and auth.currency != code.currency:
                raise PaymentRefused(
                    "the authorized currency differs from the code's", param="authorization"
                )
            try:
                lookup_currency(auth.currency)
            except SafescanError as exc:
                raise PaymentRefused(exc.message, param="authorization") from None

    def _plan_payment(
        self,
        opened: OpenedCode,
        auth: Authorization,
        customer_id: str,
        idem: Request | None,
        now: int,
    ) -> _PaymentPlan:
        """Everything a payment writes that does not depend on the database: ids, the signed
        receipt, the answer, the outbox event and the audit entry (less its chain position)."""
        code = opened.code
        mid = code.merchant.id
        payment_id = new_id("pay_", 16)
        pseudonym = self.keys.pseudonym(mid, customer_id)
        cur, amount = auth.currency, auth.amount
        if isinstance(code, DynamicCode):
            order_id = code.order_id
        else:
            order_id = new_id("S", ORDER_ID_CHARS - 1)
        entity = f"order:{mid}:{order_id}"
        receipt_bytes = (
            Receipt(
                payment_id=payment_id,
                order_id=order_id,
                merchant_id=mid,
                amount=amount,
                currency=cur,
                payer_pseudonym=pseudonym,
                paid_at=now,
                code_digest=opened.digest,
                issuer_kid=self.keys.root_kid,
            )
            .signed(self.keys.root)
            .to_bytes()
        )
        data = {
            "payment_id": payment_id,
            "order_id": order_id,
            "amount": amount,
            "currency": cur,
            "payer_pseudonym": pseudonym,
            "paid_at": now,
        }
        result = Stored(
            201,
            {
                "payment_id": payment_id,
                "status": "succeeded",
                "order_id": order_id,
                "merchant_id": mid,
                "amount": amount,
                "currency": cur,
                "payer_pseudonym": pseudonym,
                "paid_at": now,
                "receipt": b64e(receipt_bytes),
            },
        )
        return _PaymentPlan(
            opened=opened,
            auth=auth,
            customer_id=customer_id,
            mid=mid,
            order_id=order_id,
            payment_id=payment_id,
            pseudonym=pseudonym,
            now=now,
            fast=code.kind is CodeKind.DYNAMIC and opened.issuer == "institution",
            entity=entity,
            chain=audit.chain_for(entity),
            receipt=receipt_bytes,
            event=event_params(
                new_id("evt_", 20), mid, "payment.succeeded", data, now, self.webhooks_enabled
            ),
            audit_actor=f"carrier:{auth.carrier_serial}",
            audit_data=data | {"customer_id": customer_id, "counter": auth.counter},
            idem=idem,
            result=result,
        )

    def _pay_order_in_one_statement(self, plan: _PaymentPlan) -> Stored:
        """PostgreSQL, institution-issued order: the whole payment is one call of
        ``safescan_pay_order`` (migration 0002), committed in the same round trip; a refusal
        raised inside it leaves nothing behind and becomes the same typed error as
        :meth:`_payment_tx` gives."""
        auth, data_text = plan.auth, canonical_json(plan.audit_data)
        params = {
            "mid": plan.mid,
            "order_id": plan.order_id,
            "amount": auth.amount,
            "currency": auth.currency,
            "digest": plan.opened.digest,
            "now": plan.now,
            "payment_id": plan.payment_id,
            "serial": auth.carrier_serial,
            "counter": auth.counter,
            "cid": plan.customer_id,
            "pseudonym": plan.pseudonym,
            "receipt": plan.receipt,
            "e_id": plan.event["e_id"],
            "e_type": plan.event["e_type"],
            "e_payload": plan.event["e_payload"],
            "e_state": plan.event["e_state"],
            "a_chain": plan.chain,
            "a_actor": plan.audit_actor,
            "a_action": PAYMENT_ACTION,
            "a_entity": plan.entity,
            "a_data": data_text,
            "a_tail": audit.entry_tail(
                plan.now, plan.audit_actor, PAYMENT_ACTION, plan.entity, data_text
            ),
            "i_scope": plan.idem.scope if plan.idem else "",
            "i_key": plan.idem.key if plan.idem else None,
            "i_hash": plan.idem.request_hash if plan.idem else "",
            "i_status": plan.result.status,
            "i_response": None if plan.idem is None else canonical_json(plan.result.body),
        }
        try:
            self.db.write_one(lambda conn: sql.run(conn, sql.PAY_ORDER_CALL, params).fetchall())
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state == sql.PAY_MERCHANT_INACTIVE:
                raise Forbidden("the merchant is not active", param="code") from None
            if state == sql.PAY_ORDER_UNPAYABLE:
                self.db.read(
                    lambda c: self._explain_unpayable(c, plan.mid, plan.order_id, plan.now)
                )
            if state == sql.PAY_CARRIER_REFUSED:
                self.db.read(lambda c: self._refuse_carrier(c, auth))
            if state == sql.PAY_INSUFFICIENT_FUNDS:
                raise InsufficientFunds(
                    "the customer's balance is too low for this payment"
                ) from None
            if state == sql.PAY_IDEMPOTENCY_TAKEN:
                raise idempotency.Answered(None) from None
            raise
        return plan.result

    @staticmethod
    def _refuse_carrier(conn: Connection, auth: Authorization) -> NoReturn:
        """Why a carrier's counter could not advance: revoked, or a replayed counter."""
        st = conn.execute(
            select(CarrierRow.status, CarrierRow.last_counter).where(
                CarrierRow.serial == auth.carrier_serial
            )
        ).first()
        if st is None or st.status != "active":
            raise CarrierRevoked(f"key carrier {auth.carrier_serial} has been revoked")
        raise CounterReplay(
            f"the carrier counter {auth.counter} is not greater than {st.last_counter}"
            " (replayed authorization)",
            param="authorization",
        )

    def _payment_tx(self, plan: _PaymentPlan) -> Callable[[Connection], Stored]:
        """The payment as a transaction of several statements (SQLite, and merchant-signed
        or static codes on PostgreSQL): same steps, same lock order as safescan_pay_order."""
        opened, auth, mid, cur, amount = (
            plan.opened,
            plan.auth,
            plan.mid,
            plan.auth.currency,
            plan.auth.amount,
        )
        code, fast, now = opened.code, plan.fast, plan.now

        def tx(conn: Connection) -> Stored:
            if opened.certificate is not None:
                problem = certificate_problem(conn, opened.certificate)
                if problem is not None:
                    raise Forbidden(problem, param="code")
            order_pk: int | None = None
            if not fast:  # merchant-signed or static: the order row is born PAID
                order_pk = self._insert_paid_order(
                    conn, code, plan.order_id, plan.payment_id, amount, cur, opened.digest, now
                )
            # One round trip on PostgreSQL: the statements below do not depend on each other;
            # their results are checked afterwards, in order, and any failure rolls all back.
            batch: list[tuple[str, dict[str, Any]]] = [(sql.MERCHANT_STATUS, {"mid": mid})]
            if fast:
                batch.append(
                    (
                        sql.PAY_ORDER,
                        {
                            "now": now,
                            "amount": amount,
                            "payment_id": plan.payment_id,
                            "mid": mid,
                            "order_id": plan.order_id,
                            "currency": cur,
                            "digest": opened.digest,
                        },
                    )
                )
            batch += [
                (sql.ADVANCE_COUNTER, {"counter": auth.counter, "serial": auth.carrier_serial}),
                (sql.DEBIT_CUSTOMER, {"amount": amount, "cid": plan.customer_id, "currency": cur}),
                (sql.CREDIT_MERCHANT, {"amount": amount, "mid": mid, "currency": cur}),
                (sql.AUDIT_RESERVE, {"chain": plan.chain}),
            ]
            results = iter(sql.run_batch(conn, batch))
            # 0. the merchant is live
            status, _ = next(results)
            if not status or status[0][0] != "active":
                raise Forbidden("the merchant is not active", param="code")
            # 1. the order: CREATED -> PAID, exactly once
            if fast:
                rows, _ = next(results)
                if not rows:
                    self._explain_unpayable(conn, mid, plan.order_id, now)
                order_pk = rows[0][0]
            # 2. the carrier: live, and its counter strictly increasing
            _, advanced = next(results)
            if advanced != 1:
                self._refuse_carrier(conn, auth)
            # 3. the money: debit the customer (never below zero), credit the merchant
            debited, _ = next(results)
            if not debited:
                raise InsufficientFunds("the customer's balance is too low for this payment")
            credited, _ = next(results)
            if credited:
                merch_acct = credited[0][0]
            else:
                merch_acct = ledger.ensure_account(conn, ledger.MERCHANT, mid, cur, now)
                sql.run(conn, sql.CREDIT, {"amount": amount, "id": merch_acct, "currency": cur})
            reserved, _ = next(results)
            seq, prev_hash = int(reserved[0][0]), str(reserved[0][1])
            # 4. the records: transfer, payment, outbox event, audit entry (one round trip on
            # PostgreSQL)
            sql.run_many(
                conn,
                sql.RECORD_PAYMENT,
                {
                    "t_debit": debited[0][0],
                    "t_credit": merch_acct,
                    "t_ref": plan.payment_id,
                    "p_id": plan.payment_id,
                    "p_order_pk": order_pk,
                    "p_mid": mid,
                    "p_cid": plan.customer_id,
                    "p_serial": auth.carrier_serial,
                    "p_counter": auth.counter,
                    "p_pseudonym": plan.pseudonym,
                    "p_receipt": plan.receipt,
                    "amount": amount,
                    "currency": cur,
                    "now": now,
                    **plan.event,
                    **audit.entry_params(
                        plan.chain,
                        seq,
                        prev_hash,
                        at=now,
                        actor=plan.audit_actor,
                        action=PAYMENT_ACTION,
                        entity=plan.entity,
                        data=plan.audit_data,
                    ),
                },
            )
            return plan.result

        return tx

    @staticmethod
    def _insert_paid_order(
        conn: Connection,
        code: Any,
        order_id: str,
        payment_id: str,
        amount: int,
        currency: int,
        digest: bytes,
        now: int,
    ) -> int:
        """Merchant-signed or static code: insert the order already PAID, at most once."""
        if isinstance(code, DynamicCode):
            kind = "dynamic"
            items = canonical_json([[i.name, i.quantity, i.unit_price] for i in code.items])
        else:
            kind, items = "static", "[]"
        insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        order_pk = conn.execute(
            insert_(OrderRow)
            .values(
                merchant_id=code.merchant.id,
                order_id=order_id,
                kind=kind,
                state="PAID",
                currency=currency,
                total=amount,
                items=items,
                code_digest=digest,
                created_at=now,
                expires_at=code.expires_at,
                paid_at=now,
                paid_amount=amount,
                refunded_amount=0,
                payment_id=payment_id,
            )
            .on_conflict_do_nothing()
            .returning(OrderRow.pk)
        ).scalar()
        if order_pk is None:  # paid already, or withdrawn by the merchant
            Institution._explain_unpayable(conn, code.merchant.id, order_id, now)
        return int(order_pk)

    @staticmethod
    def _explain_unpayable(conn: Connection, mid: str, order_id: str, now: int) -> NoReturn:
        row = conn.execute(
            select(OrderRow.state, OrderRow.expires_at).where(
                OrderRow.merchant_id == mid, OrderRow.order_id == order_id
            )
        ).first()
        if row is None:
            raise OrderNotPayable("the code's order is unknown here", param="code")
        if row.state == "CREATED" and row.expires_at <= now:
            raise OrderNotPayable("the order has expired", param="code")
        if row.state == "CREATED":
            raise PaymentRefused("the code does not match its order", param="code")
        if row.state in PAID_STATES:
            raise OrderNotPayable("this order has already been paid", param="code")
        raise OrderNotPayable(f"the order is {row.state}", param="code")

    def get_payment(self, mid: str, payment_id: str) -> dict[str, Any]:
        """A payment as its merchant sees it (pseudonym, never the account)."""
        row = self.db.read(
            lambda c: c.execute(
                select(Payment, OrderRow.order_id, OrderRow.state.label("order_state"))
                .join(OrderRow, OrderRow.pk == Payment.order_pk)
                .where(Payment.id == payment_id, Payment.merchant_id == mid)
            ).first()
        )
        if row is None:
            raise NotFound(f"no payment {payment_id} for this merchant", param="payment_id")
        p = row
        return {
            "payment_id": p.id,
            "order_id": row.order_id,
            "order_state": row.order_state,
            "merchant_id": mid,
            "amount": p.amount,
            "currency": p.currency,
            "payer_pseudonym": p.payer_pseudonym,
            "paid_at": p.created_at,
            "receipt": b64e(p.receipt),
        }

    # --- refunds -----------------------------------------------------------------------------

    def refund(
        self,
        mid: str,
        order_id: str,
        *,
        amount: int | None,
        reason: str | None,
        idempotency_key: str | None,
    ) -> Stored:
        """Refund all (``amount`` None) or part of a paid order; never more than was paid."""
        amount = None if amount is None else guards.amount(amount)
        reason = guards.optional_text(reason, param="reason", max_chars=200)
        req = refund_request(mid, idempotency_key, order_id, amount, reason)
        now = self.now()
        refund_id = new_id("re_", 16)

        def tx(conn: Connection) -> Stored:
            o = self._order_row(conn, mid, order_id)
            if o.state not in ("PAID", "PARTIALLY_REFUNDED"):
                raise OrderNotRefundable(
                    f"the order is {o.state}; nothing to refund", param="order_id"
                )
            amt = o.paid_amount - o.refunded_amount if amount is None else amount
            row = conn.execute(
                update(OrderRow)
                .where(
                    OrderRow.pk == o.pk,
                    OrderRow.state.in_(("PAID", "PARTIALLY_REFUNDED")),
                    OrderRow.refunded_amount + amt <= OrderRow.paid_amount,
                )
                .values(
                    refunded_amount=OrderRow.refunded_amount + amt,
                    state=case(
                        (OrderRow.refunded_amount + amt == OrderRow.paid_amount, "REFUNDED"),
                        else_="PARTIALLY_REFUNDED",
                    ),
                )
                .returning(OrderRow.state, OrderRow.refunded_amount, OrderRow.paid_amount)
            ).first()
            if row is None:
                cur = lookup_currency(o.currency)
                left = cur.format(o.paid_amount - o.refunded_amount)
                raise OrderNotRefundable(
                    f"the refund of {cur.format(amt)} exceeds the {left} left to refund",
                    param="amount",
                )
            p = conn.execute(
                select(Payment.id, Payment.customer_id, Payment.currency).where(
                    Payment.order_pk == o.pk
                )
            ).one()
            cust = ledger.ensure_account(conn, ledger.CUSTOMER, p.customer_id, p.currency, now)
            merch = ledger.ensure_account(conn, ledger.MERCHANT, mid, p.currency, now)
            ledger.post_transfer(
                conn,
                debit=merch,
                credit=cust,
                amount=amt,
                currency=p.currency,
                kind="refund",
                ref=refund_id,
                now=now,
                checked=frozenset({cust}),
            )
            conn.execute(
                insert(Refund).values(
                    id=refund_id,
                    payment_id=p.id,
                    order_pk=o.pk,
                    merchant_id=mid,
                    amount=amt,
                    currency=p.currency,
                    reason=reason,
                    created_at=now,
                )
            )
            data = {
                "refund_id": refund_id,
                "payment_id": p.id,
                "order_id": order_id,
                "amount": amt,
                "currency": p.currency,
                "order_state": row.state,
                "refunded_amount": row.refunded_amount,
            }
            new_event(
                conn,
                merchant_id=mid,
                type_="refund.succeeded",
                data=data,
                now=now,
                webhook=self.webhooks_enabled,
            )
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="refund.create",
                entity=f"order:{mid}:{order_id}",
                data=data | {"reason": reason},
            )
            return Stored(201, data | {"status": "succeeded", "created_at": now})

        return idempotency.execute(self.db, req, now, tx)

    # --- events ------------------------------------------------------------------------------

    def events_after(self, mid: str, after: int, limit: int = 100) -> list[dict[str, Any]]:
        """A merchant's events with sequence number greater than ``after`` (for the stream)."""
        rows = self.db.read(
            lambda c: c.execute(
                select(Event.seq, Event.type, Event.payload, Event.signature)
                .where(Event.merchant_id == mid, Event.seq > after)
                .order_by(Event.seq)
                .limit(limit)
            ).all()
        )
        return [
            {"seq": r.seq, "type": r.type, "payload": r.payload, "signature": r.signature}
            for r in rows
        ]


__all__ = ["Institution", "Stored", "request_hash"]
