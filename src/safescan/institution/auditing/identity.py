"""Cross-references of who is who: keys, administrator tokens, merchants, customers,
certificates, key carriers, enrollment tokens and counters, each against the audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from safescan.api.states import Status
from safescan.code.certs import Certificate, Role
from safescan.code.errors import SafescanError
from safescan.code.provisioning import carrier_subject
from safescan.institution.auditing.context import Context, Row, b64, differs, group
from safescan.institution.auditing.journal import Entry

HEX64 = re.compile(r"[0-9a-f]{64}")
CARRIER_CERT_SECONDS = 4 * 365 * 86400  # service.CARRIER_CERT_DAYS
REVOCATIONS = ("merchant.revoke", "carrier.revoke")
KNOWN_COUNTERS = ("crl_sequence", "certificate_serial")


def _logged(data: dict[str, Any], name: str, stored: Any) -> Any:
    """What the log says ``name`` should be; ``stored`` itself when the entry predates the
    field (older entries did not record it)."""
    return data.get(name, stored)


def check_keys(ctx: Context) -> Iterator[str]:
    """Institution public keys: the root key the log was initialised with, every registered
    scheme key with its retirement time, nothing else."""
    init = ctx.journal.init
    if init is None:
        if ctx.rows("audit_log") or "audit_log" in ctx.snap.unreadable:
            yield "the audit log has no institution.init entry"
        return
    registered = group(
        ctx.journal.of("key.register"), lambda e: (e.data.get("purpose"), e.data.get("kid"))
    )
    for r in ctx.rows("institution_keys"):
        what = f"institution key {r['purpose']} {r['kid']}"
        if r["purpose"] == "root":
            if r["kid"] != init.data.get("root_kid"):
                yield f"{what} was never registered in the audit log"
                continue
            yield from differs(
                what,
                {
                    "public_key": (
                        b64(r["public_key"]),
                        _logged(init.data, "root_public_key", b64(r["public_key"])),
                    ),
                    "created_at": (r["created_at"], init.at),
                    "retire_at": (r["retire_at"], None),
                },
            )
        elif r["purpose"] == "scheme":
            entries = registered.get(("scheme", r["kid"]))
            if not entries:
                yield f"{what} was never registered in the audit log"
                continue
            last = entries[-1].data
            yield from differs(
                what,
                {
                    "public_key": (
                        b64(r["public_key"]),
                        _logged(last, "public_key", b64(r["public_key"])),
                    ),
                    "created_at": (r["created_at"], entries[0].at),
                    "retire_at": (r["retire_at"], last.get("retire_at")),
                },
            )
        else:
            yield f"{what}: unknown purpose"
        if len(r["public_key"]) != 32:
            yield f"{what}: the public key is not 32 bytes"
    present = {(r["purpose"], r["kid"]) for r in ctx.rows("institution_keys")}
    if ctx.readable("institution_keys"):
        if ("root", init.data.get("root_kid")) not in present:
            yield f"the root key {init.data.get('root_kid')} of the audit log is missing"
        for purpose, kid in registered:
            if (purpose, kid) not in present:
                yield f"institution key {purpose} {kid} is registered in the audit log but missing"


def check_admin_tokens(ctx: Context) -> Iterator[str]:
    """Administrator tokens: exactly the created and not revoked ones, hashes as logged."""
    init = ctx.journal.init
    live: dict[int, tuple[int, str | None]] = {}
    if init is not None and "admin_token_id" in init.data:
        live[init.data["admin_token_id"]] = (init.at, init.data.get("admin_token_hash"))
    for e in ctx.journal.of("admin_token.create"):
        live[e.data.get("id", -1)] = (e.at, e.data.get("token_hash"))
    for e in ctx.journal.of("admin_token.revoke"):
        live.pop(e.data.get("id", -1), None)
    for r in ctx.rows("admin_tokens"):
        what = f"administrator token {r['id']}"
        if not HEX64.fullmatch(r["token_hash"]):
            yield f"{what}: the stored hash is not 64 hex digits"
        found = live.pop(r["id"], None)
        if found is None:
            legacy = (
                init is not None
                and "admin_token_id" not in init.data
                and r["created_at"] == init.at
            )
            if not legacy:
                yield f"{what} has no creation entry in the audit log (or was revoked)"
            continue
        at, digest = found
        yield from differs(
            what,
            {
                "created_at": (r["created_at"], at),
                "token_hash": (r["token_hash"], digest or r["token_hash"]),
            },
        )
    if ctx.readable("admin_tokens"):
        for token_id in sorted(live):
            yield f"administrator token {token_id} is live in the audit log but missing"


def check_merchants(ctx: Context) -> Iterator[str]:
    """Every merchant as its creation, webhook changes and revocation left it."""
    rows = ctx.by_pk("merchants", "id")
    seen = set()
    for e in ctx.journal.of("merchant.create"):
        mid = e.data.get("id")
        seen.add(mid)
        r = rows.get(mid)
        if r is None:
            if ctx.readable("merchants"):
                yield f"merchant {mid} is in the audit log but missing"
            continue
        expect = dict(e.data)
        for later in ctx.journal.about(e.entity):
            if later.action == "merchant.webhook":
                expect["webhook_url"] = later.data.get("webhook_url")
            elif later.action == "merchant.revoke":
                expect["status"] = Status.REVOKED
        stored = dict(r) | {"api_public_key": b64(r["api_public_key"])}
        yield from differs(f"merchant {mid}", {k: (stored.get(k), v) for k, v in expect.items()})
    for mid in rows:
        if mid not in seen:
            yield f"merchant {mid} has no creation entry in the audit log"


def check_customers(ctx: Context) -> Iterator[str]:
    """Every customer as its creation entry says."""
    rows = ctx.by_pk("customers", "id")
    seen = set()
    for e in ctx.journal.of("customer.create"):
        cid = e.entity.partition(":")[2]
        seen.add(cid)
        r = rows.get(cid)
        if r is None:
            if ctx.readable("customers"):
                yield f"customer {cid} is in the audit log but missing"
            continue
        yield from differs(
            f"customer {cid}",
            {
                "name": (r["name"], e.data.get("name")),
                "created_at": (r["created_at"], e.at),
                "status": (r["status"], Status.ACTIVE),
            },
        )
    for cid in rows:
        if cid not in seen:
            yield f"customer {cid} has no creation entry in the audit log"


def revocation_times(ctx: Context) -> dict[int, int]:
    """When each certificate serial was revoked, from the log."""
    out: dict[int, int] = {}
    for action in REVOCATIONS:
        for e in ctx.journal.of(action):
            for serial in e.data.get("revoked_certificates", []):
                out.setdefault(serial, e.at)
    return out


def _issuers(ctx: Context) -> dict[int, Entry]:
    out = {}
    for e in ctx.journal.of("certificate.issue") + ctx.journal.of("carrier.enroll"):
        if isinstance(e.data.get("serial"), int):
            out[e.data["serial"]] = e
    return out


def check_certificates(ctx: Context) -> Iterator[str]:
    """Every certificate: parses, verifies under the root key, matches its row, names a real
    subject, was issued by a logged action, revoked exactly when the log says."""
    issuers, revoked = _issuers(ctx), revocation_times(ctx)
    merchants, carriers = ctx.by_pk("merchants", "id"), ctx.by_pk("carriers", "serial")
    for r in ctx.rows("certificates"):
        serial = r["serial"]
        what = f"certificate {serial}"
        yield from _check_cert_bytes(ctx, r)
        e = issuers.get(serial)
        if e is None:
            yield f"{what} has no issuing entry in the audit log"
        else:
            role = Role.CARRIER if e.action == "carrier.enroll" else Role.MERCHANT
            subject = (
                carrier_subject(serial) if role is Role.CARRIER else e.entity.partition(":")[2]
            )
            fields = {
                "role": (r["role"], int(role)),
                "subject": (r["subject"], subject),
                "created_at": (r["created_at"], e.at),
                "not_before": (r["not_before"], e.at - 60),
            }
            if role is Role.CARRIER:
                fields["not_after"] = (r["not_after"], e.at + CARRIER_CERT_SECONDS)
            yield from differs(what, fields)
        yield from differs(what, {"revoked_at": (r["revoked_at"], revoked.get(serial))})
        if (
            r["role"] == Role.MERCHANT
            and r["subject"] not in merchants
            and ctx.readable("merchants")
        ):
            yield f"{what} names merchant {r['subject']}, which does not exist"
        if r["role"] == Role.CARRIER and serial not in carriers and ctx.readable("carriers"):
            yield f"{what} is a carrier certificate without its carrier"
    if ctx.readable("certificates"):
        have = ctx.by_pk("certificates", "serial")
        for serial in sorted(set(issuers) - set(have)):
            yield f"certificate {serial} is issued in the audit log but missing"


def _check_cert_bytes(ctx: Context, r: Row) -> Iterator[str]:
    what = f"certificate {r['serial']}"
    if r["cert"] is None:
        yield f"{what}: the signed certificate is missing"
        return
    try:
        cert = Certificate.from_bytes(r["cert"])
        ctx.trust.institution_key(cert.issuer_kid).verify(
            cert.signature, cert.tbs(), what="certificate signature"
        )
    except SafescanError as exc:
        yield f"{what}: {exc.message}"
        return
    yield from differs(
        what + " (signed bytes vs row)",
        {
            "serial": (r["serial"], cert.serial),
            "role": (r["role"], int(cert.role)),
            "subject": (r["subject"], cert.subject),
            "public_key": (r["public_key"], cert.public_key.raw),
            "not_before": (r["not_before"], cert.not_before),
            "not_after": (r["not_after"], cert.not_after),
        },
    )


def check_carriers(ctx: Context) -> Iterator[str]:
    """Every key carrier: enrolled as logged, its certificate's key, its status, and its counter
    equal to the highest counter of its payments (the authorizations it signed) and of the
    authorizations a status lookup withdrew (logged ``payment.withdrawn``)."""
    enrolls = {e.data.get("serial"): e for e in ctx.journal.of("carrier.enroll")}
    revoked = {e.entity for e in ctx.journal.of("carrier.revoke")}
    certs = ctx.by_pk("certificates", "serial")
    customers = ctx.by_pk("customers", "id")
    counters: dict[int, int] = {}
    for p in ctx.rows("payments"):
        counters[p["carrier_serial"]] = max(counters.get(p["carrier_serial"], -1), p["counter"])
    for w in ctx.journal.of("payment.withdrawn"):  # a status lookup fenced the counter
        serial, counter = w.data.get("carrier_serial"), w.data.get("counter")
        if isinstance(serial, int) and isinstance(counter, int):
            counters[serial] = max(counters.get(serial, -1), counter)
    for r in ctx.rows("carriers"):
        serial = r["serial"]
        what = f"carrier {serial}"
        e = enrolls.get(serial)
        if e is None:
            yield f"{what} has no enrollment entry in the audit log"
            continue
        fields = {
            "customer_id": (r["customer_id"], e.data.get("customer_id")),
            "created_at": (r["created_at"], e.at),
            "transport_public_key": (
                b64(r["transport_public_key"]),
                _logged(e.data, "transport_public_key", b64(r["transport_public_key"])),
            ),
            "status": (
                r["status"],
                Status.REVOKED if f"carrier:{serial}" in revoked else Status.ACTIVE,
            ),
        }
        if ctx.readable("payments"):
            fields["last_counter"] = (r["last_counter"], counters.get(serial, -1))
        yield from differs(what, fields)
        cert = certs.get(serial)
        if cert is not None and cert["public_key"] != r["signing_public_key"]:
            yield f"{what}: its signing key is not the one its certificate certifies"
        if r["customer_id"] not in customers and ctx.readable("customers"):
            yield f"{what} belongs to customer {r['customer_id']}, who does not exist"
    if ctx.readable("carriers"):
        have = ctx.by_pk("carriers", "serial")
        for serial in sorted(s for s in enrolls if s not in have and isinstance(s, int)):
            yield f"carrier {serial} is enrolled in the audit log but missing"


def check_enrollment_tokens(ctx: Context) -> Iterator[str]:
    """Enrollment tokens: issued as logged; used exactly by the logged enrollments."""
    issued = ctx.journal.of("enrollment.token")
    enrolls = ctx.journal.of("carrier.enroll")
    by_hash = {e.data["token_hash"]: e for e in issued if "token_hash" in e.data}
    used_by = {e.data["token_hash"]: e for e in enrolls if "token_hash" in e.data}
    legacy = group(
        [e for e in issued if "token_hash" not in e.data],
        lambda e: (e.entity.partition(":")[2], e.data.get("expires_at")),
    )
    rows = ctx.rows("enrollment_tokens")
    for r in rows:
        what = f"enrollment token of customer {r['customer_id']} (expires {r['expires_at']})"
        if not HEX64.fullmatch(r["token_hash"]):
            yield f"{what}: the stored hash is not 64 hex digits"
        e: Entry | None = by_hash.get(r["token_hash"])
        if e is None:
            candidates = legacy.get((r["customer_id"], r["expires_at"]))
            if not candidates:
                yield f"{what} has no issuing entry in the audit log"
                continue
            e = candidates.pop()
        yield from differs(
            what,
            {
                "customer_id": (r["customer_id"], e.entity.partition(":")[2]),
                "expires_at": (r["expires_at"], e.data.get("expires_at")),
            },
        )
        used = used_by.get(r["token_hash"])
        if used is not None:
            yield from differs(what, {"used_at": (r["used_at"], used.at)})
        elif "token_hash" in e.data and r["used_at"] is not None:
            yield f"{what} is marked used, but no enrollment used it"
    if ctx.readable("enrollment_tokens"):
        have = {r["token_hash"] for r in rows}
        for digest, e in by_hash.items():
            if digest not in have:
                yield f"an enrollment token of {e.entity} is in the audit log but missing"
        spent = group([r for r in rows if r["used_at"] is not None], "customer_id")
        for cid, entries in group(enrolls, lambda e: e.data.get("customer_id")).items():
            if len(spent.get(cid, [])) != len(entries):
                yield (
                    f"customer {cid}: {len(entries)} carrier enrollment(s) logged but"
                    f" {len(spent.get(cid, []))} enrollment token(s) used"
                )


def check_counters(ctx: Context) -> Iterator[str]:
    """The revocation list sequence (one step per revocation that revoked something) and the
    certificate serial allocator (never behind the highest serial)."""
    values = {r["name"]: r["value"] for r in ctx.rows("counters")}
    for name in sorted(set(values) - set(KNOWN_COUNTERS)):
        yield f"unknown counter {name!r}"
    logged = [
        e.data["crl_sequence"]
        for a in (*REVOCATIONS, "institution.reconcile")
        for e in ctx.journal.of(a)
        if isinstance(e.data.get("crl_sequence"), int)
    ]
    steps = sum(
        1 for a in REVOCATIONS for e in ctx.journal.of(a) if e.data.get("revoked_certificates")
    )
    expect = max(logged) if logged else steps
    if ctx.readable("counters") and ctx.journal.init is not None:
        yield from differs("counter crl_sequence", {"value": (values.get("crl_sequence"), expect)})
    top = max((r["serial"] for r in ctx.rows("certificates")), default=0)
    floors = [
        e.data["certificate_serial"]
        for e in ctx.journal.of("institution.reconcile")
        if isinstance(e.data.get("certificate_serial"), int)
    ]
    if "certificate_serial" in values and ctx.readable("certificates"):
        # the highest serial issued, or a reconciliation's floor above it
        expect_serial = max([top, *floors])
        yield from differs(
            "counter certificate_serial", {"value": (values["certificate_serial"], expect_serial)}
        )


CHECKS = (
    check_keys,
    check_admin_tokens,
    check_merchants,
    check_customers,
    check_certificates,
    check_carriers,
    check_enrollment_tokens,
    check_counters,
)

__all__ = ["CHECKS", "revocation_times"]
