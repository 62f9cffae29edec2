"""The carrier lifecycle's tables against the audit log (manufacturer keys so far).

A manufacturer key added or re-activated behind the institution's back would let the chips it
attests enroll: every ``manufacturer_keys`` row must be exactly what ``manufacturer.add`` logged,
revoked exactly when ``manufacturer.revoke`` says.
"""

from __future__ import annotations

from collections.abc import Iterator

from safescan.institution.auditing.context import Context, differs


def check_manufacturers(ctx: Context) -> Iterator[str]:
    """Every manufacturer key: its adding entry (key, name, time) and its revocation."""
    rows = ctx.by_pk("manufacturer_keys", "kid")
    revoked = {e.data.get("kid"): e.at for e in ctx.journal.of("manufacturer.revoke")}
    seen = set()
    for e in ctx.journal.of("manufacturer.add"):
        kid = e.data.get("kid")
        seen.add(kid)
        r = rows.get(kid)
        if r is None:
            if ctx.readable("manufacturer_keys"):
                yield f"manufacturer key {kid} is in the audit log but missing"
            continue
        at = revoked.get(kid)
        yield from differs(
            f"manufacturer key {kid}",
            {
                "public_key": (r["public_key"].hex(), e.data.get("public_key")),
                "name": (r["name"], e.data.get("name")),
                "created_at": (r["created_at"], e.at),
                "status": (r["status"], "active" if at is None else "revoked"),
                "revoked_at": (r["revoked_at"], at),
            },
        )
    for kid in rows:
        if kid not in seen:
            yield f"manufacturer key {kid} has no entry in the audit log (manufacturer.add)"


CHECKS = (check_manufacturers,)

__all__ = ["CHECKS"]
