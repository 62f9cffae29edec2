"""Webhook operations against the audit log: endpoint secrets as their rotations left them,
delivery-log rows that name real events of their own merchant.

The sealed secrets themselves cannot be checked (the audit has no key); delivery times,
statuses, errors and latencies are bookkeeping recorded nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator

from safescan.institution.auditing.context import Context, differs

DELIVERY_KINDS = ("event", "test")
DELIVERY_STATES = ("delivered", "retrying", "failed")


def check_endpoint_secrets(ctx: Context) -> Iterator[str]:
    """Every endpoint secret row matches its merchant's ``merchant.webhook_secret`` entries:
    version, first creation, last rotation, overlap end (gone once past)."""
    rows = ctx.by_pk("webhook_endpoints", "merchant_id")
    seen = set()
    for mid in ctx.by_pk("merchants", "id"):
        entries = [
            e for e in ctx.journal.about(f"merchant:{mid}") if e.action == "merchant.webhook_secret"
        ]
        if not entries:
            continue
        seen.add(mid)
        r = rows.get(mid)
        if r is None:
            if ctx.readable("webhook_endpoints"):
                yield f"webhook secret of {mid} is in the audit log but missing"
            continue
        last = entries[-1]
        until = last.data.get("previous_valid_until")
        yield from differs(
            f"webhook secret of {mid}",
            {
                "version": (r["version"], last.data.get("version")),
                "created_at": (r["created_at"], entries[0].at),
                "rotated_at": (r["rotated_at"], last.at),
            },
        )
        if r["previous_until"] not in (until, None) or (
            r["previous_until"] is None and until is not None and until > ctx.now
        ):
            yield f"webhook secret of {mid}: overlap end {r['previous_until']}, logged {until}"
        if (r["previous_box"] is None) != (r["previous_until"] is None):
            yield f"webhook secret of {mid}: a previous secret without its overlap end"
    for mid in rows:
        if mid not in seen:
            yield f"webhook secret of {mid} has no rotation in the audit log"


def check_delivery_log(ctx: Context) -> Iterator[str]:
    """Every delivery-log row: a known kind and state, an existing merchant, and (for event
    deliveries) an event of that same merchant."""
    merchants = ctx.by_pk("merchants", "id")
    events = ctx.by_pk("events", "id")
    for d in ctx.rows("webhook_deliveries"):
        what = f"webhook delivery {d['id']}"
        if d["kind"] not in DELIVERY_KINDS or d["state"] not in DELIVERY_STATES:
            yield f"{what}: unknown kind or state ({d['kind']!r}, {d['state']!r})"
        if d["merchant_id"] not in merchants and ctx.readable("merchants"):
            yield f"{what}: merchant {d['merchant_id']} does not exist"
        if d["kind"] == "event" and ctx.readable("events"):
            ev = events.get(d["event_id"])
            if ev is None or ev["merchant_id"] != d["merchant_id"]:
                yield f"{what}: event {d['event_id']} is not an event of {d['merchant_id']}"
        if d["attempt"] < 1:
            yield f"{what}: attempt number {d['attempt']}"


CHECKS = (check_endpoint_secrets, check_delivery_log)

__all__ = ["CHECKS"]
