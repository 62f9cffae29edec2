"""The carrier lifecycle's tables against the audit log: manufacturer keys, the attested chip
behind each carrier, the scheme-key epochs.

A manufacturer key added or re-activated behind the institution's back would let the chips it
attests enroll: every ``manufacturer_keys`` row must be exactly what ``manufacturer.add`` logged,
revoked exactly when ``manufacturer.revoke`` says. Every ``carrier_devices`` row must be what
its ``carrier.enroll`` logged (device id, model, manufacturer, time), and its stored attestation
statement must still verify (under the logged manufacturer key, for the carrier's enrolled keys)
and name the same chip and certificate. Every ``scheme_epochs`` row must be what its
``scheme.epoch`` entry logged (key id, reason, start; public key and retirement time in entries
written since they were logged).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from safescan.api.states import Status
from safescan.code.attestation import AttestationStatement, CarrierModel, device_subject
from safescan.code.certs import Role, TrustStore, verify_certificate
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey
from safescan.institution.auditing.carrier_epochs import EpochFinding, tagged
from safescan.institution.auditing.context import Context, Row, b64, differs
from safescan.institution.auditing.journal import Entry


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
                "status": (r["status"], Status.ACTIVE if at is None else Status.REVOKED),
                "revoked_at": (r["revoked_at"], at),
            },
        )
    for kid in rows:
        if kid not in seen:
            yield f"manufacturer key {kid} has no entry in the audit log (manufacturer.add)"


def _model_name(value: Any) -> str | None:
    try:
        return CarrierModel(value).name.lower()
    except ValueError:
        return None


def _manufacturers(ctx: Context) -> TrustStore:
    """Every manufacturer key the audit log ever added (revoked ones too: a chip enrolled
    before its manufacturer's revocation keeps its record)."""
    keys: dict[int, VerifyKey] = {}
    for e in ctx.journal.of("manufacturer.add"):
        try:
            keys[e.data["kid"]] = VerifyKey(bytes.fromhex(e.data["public_key"]))
        except (KeyError, TypeError, ValueError, SafescanError):
            continue  # reported by check_manufacturers
    return TrustStore(keys)


def _statement_findings(
    what: str, r: Row, e: Entry, carrier: Row | None, trust: TrustStore
) -> Iterator[str]:
    """The stored statement: parses, verifies under the manufacturer key at enrollment time,
    and names this row's chip, model, manufacturer and certificate and the carrier's keys."""
    try:
        st = AttestationStatement.from_bytes(r["statement"])
        verify_certificate(st.certificate, trust, role=Role.ATTESTATION, now=e.at)
        if st.certificate.subject != device_subject(st.device_id, st.model):
            yield f"{what}: the statement's certificate is for another chip"
        st.certificate.public_key.verify(st.signature, st.message(), what="attestation signature")
    except SafescanError as exc:
        yield f"{what}: the stored attestation statement does not verify ({exc.message})"
        return
    expected: dict[str, tuple[Any, Any]] = {
        "device_id": (st.device_id, r["device_id"]),
        "model": (int(st.model), r["model"]),
        "manufacturer_kid": (st.certificate.issuer_kid, r["manufacturer_kid"]),
        "attestation_serial": (st.certificate.serial, r["attestation_serial"]),
        "transport key": (b64(st.transport_public), e.data.get("transport_public_key")),
    }
    if carrier is not None:
        expected["signing key"] = (st.signing_public.raw, carrier["signing_public_key"])
    yield from differs(f"{what}: the statement's", expected)


def check_carrier_devices(ctx: Context) -> Iterator[str]:
    """Every attested carrier's chip record against its ``carrier.enroll`` entry."""
    rows = ctx.by_pk("carrier_devices", "serial")
    carriers = ctx.by_pk("carriers", "serial")
    trust = _manufacturers(ctx)
    logged = set()
    for e in ctx.journal.of("carrier.enroll"):
        if "device_id" not in e.data:
            continue  # enrolled without attestation (before #14): no chip record
        serial = e.data.get("serial")
        logged.add(serial)
        what = f"carrier {serial}'s chip record"
        r = rows.get(serial)
        if r is None:
            if ctx.readable("carrier_devices"):
                yield f"{what} is in the audit log (carrier.enroll) but missing"
            continue
        yield from differs(
            what,
            {
                "device_id": (r["device_id"].hex(), e.data.get("device_id")),
                "model": (_model_name(r["model"]), e.data.get("model")),
                "manufacturer_kid": (r["manufacturer_kid"], e.data.get("manufacturer_kid")),
                "enrolled_at": (r["enrolled_at"], e.at),
            },
        )
        yield from _statement_findings(what, r, e, carriers.get(serial), trust)
    for serial in rows:
        if serial not in logged:
            yield (
                f"carrier {serial}'s chip record has no attested enrollment in the audit log"
                " (carrier.enroll)"
            )


def check_scheme_epochs(ctx: Context) -> Iterator[str]:
    """Every scheme-key epoch against its ``scheme.epoch`` entry."""
    rows = ctx.by_pk("scheme_epochs", "epoch")
    logged = set()
    for e in ctx.journal.of("scheme.epoch"):
        epoch = e.data.get("epoch")
        if epoch in logged:
            yield f"scheme-key epoch {epoch} was started twice in the audit log"
        logged.add(epoch)
        r = rows.get(epoch)
        if r is None:
            if ctx.readable("scheme_epochs"):
                yield tagged(
                    EpochFinding.MISSING,
                    f"scheme-key epoch {epoch} is in the audit log (scheme.epoch) but missing",
                )
            continue
        fields: dict[str, tuple[Any, Any]] = {
            "kid": (r["kid"], e.data.get("kid")),
            "reason": (r["reason"], e.data.get("reason")),
            "started_at": (r["started_at"], e.at),
        }
        # logged since the audit compares them (older entries: not checked, see reliability.md)
        if "public_key" in e.data:
            fields["public_key"] = (b64(r["public_key"]), e.data["public_key"])
        if "retire_at" in e.data:
            fields["retire_at"] = (r["retire_at"], e.data["retire_at"])
        yield from differs(f"scheme-key epoch {epoch}", fields)
    for epoch in rows:
        if epoch not in logged:
            yield tagged(
                EpochFinding.UNACCOUNTED,
                f"scheme-key epoch {epoch} has no entry in the audit log (scheme.epoch)",
            )


CHECKS = (check_manufacturers, check_carrier_devices, check_scheme_epochs)

__all__ = ["CHECKS"]
