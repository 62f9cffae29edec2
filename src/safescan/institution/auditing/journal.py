"""The hash-chained audit log, read back: chain verification and the entries by subject.

Every state change wrote one entry in its own transaction (see :mod:`..audit`), so the log is
the institution's own account of what every row should hold. The cross-reference checks compare
the tables with it; this module verifies the chains and indexes the entries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from safescan.institution.audit import CHAINS, GENESIS, entry_hash
from safescan.institution.auditing.snapshot import Snapshot
from safescan.institution.util import canonical_json


@dataclass(frozen=True)
class Entry:
    """One verified, parsed audit entry."""

    chain: int
    seq: int
    at: int
    actor: str
    action: str
    entity: str
    data: dict[str, Any]  # without request_id (that is below)
    hash: str
    request_id: str | None = None  # the HTTP request that wrote the entry, if any
    row_id: int | None = None  # the row's insertion number (orders entries across chains)


@dataclass
class Journal:
    """The audit entries (chain order) indexed by action and by entity."""

    entries: list[Entry] = field(default_factory=list)
    by_action: dict[str, list[Entry]] = field(default_factory=dict)
    by_entity: dict[str, list[Entry]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    heads: dict[int, tuple[int, str]] = field(default_factory=dict)
    hashes: dict[tuple[int, int], str] = field(default_factory=dict)

    def of(self, action: str) -> list[Entry]:
        """Every entry with ``action``."""
        return self.by_action.get(action, [])

    def about(self, entity: str) -> list[Entry]:
        """Every entry about ``entity``, oldest first."""
        return self.by_entity.get(entity, [])

    @property
    def init(self) -> Entry | None:
        """The ``institution.init`` entry."""
        found = self.of("institution.init")
        return found[0] if found else None


def verify_chains(snap: Snapshot) -> Iterator[str]:
    """Every break in the chains: gaps, reordering, altered entries, heads that do not match."""
    heads = {r["chain"]: (r["seq"], r["hash"]) for r in snap.rows("audit_heads")}
    if "audit_heads" not in snap.unreadable and set(heads) != set(range(CHAINS)):
        yield f"audit heads missing: expected chains 0..{CHAINS - 1}, found {sorted(heads)}"
    state = {c: (0, GENESIS) for c in range(CHAINS)}
    for r in sorted(snap.rows("audit_log"), key=lambda r: (r["chain"], r["seq"])):
        if r["chain"] not in state:
            yield f"audit entry {r['id']} is on unknown chain {r['chain']}"
            continue
        seq, prev = state[r["chain"]]
        if r["seq"] != seq + 1:
            yield f"audit chain {r['chain']}: entry {r['seq']} follows {seq} (gap or reorder)"
        if r["prev_hash"] != prev:
            yield f"audit chain {r['chain']}: entry {r['seq']} does not link to its predecessor"
        expect = entry_hash(
            r["prev_hash"],
            r["chain"],
            r["seq"],
            r["at"],
            r["actor"],
            r["action"],
            r["entity"],
            r["data"],
        )
        if r["hash"] != expect:
            yield f"audit chain {r['chain']}: entry {r['seq']} was altered (hash mismatch)"
        state[r["chain"]] = (r["seq"], r["hash"])
    if "audit_log" in snap.unreadable:
        return
    for chain, (seq, digest) in sorted(heads.items()):
        if state.get(chain) != (seq, digest):
            yield f"audit chain {chain}: head ({seq}) does not match the last entry (truncated?)"


def read_journal(snap: Snapshot) -> Journal:
    """Parse every audit entry's data (canonical JSON objects only) and index the entries."""
    j = Journal()
    j.findings.extend(verify_chains(snap))
    j.heads = {r["chain"]: (r["seq"], r["hash"]) for r in snap.rows("audit_heads")}
    for r in sorted(snap.rows("audit_log"), key=lambda r: (r["chain"], r["seq"])):
        j.hashes[(r["chain"], r["seq"])] = r["hash"]
        try:
            data = json.loads(r["data"])
        except ValueError:
            data = None
        if not isinstance(data, dict) or canonical_json(data) != r["data"]:
            j.findings.append(
                f"audit chain {r['chain']} entry {r['seq']}: data is not a canonical JSON object"
            )
            continue
        rid = data.pop("request_id", None)  # operational, not a fact the checks compare
        e = Entry(
            r["chain"],
            r["seq"],
            r["at"],
            r["actor"],
            r["action"],
            r["entity"],
            data,
            r["hash"],
            rid if isinstance(rid, str) else None,
            r["id"] if isinstance(r["id"], int) else None,
        )
        j.entries.append(e)
        j.by_action.setdefault(e.action, []).append(e)
        j.by_entity.setdefault(e.entity, []).append(e)
    return j


__all__ = ["Entry", "Journal", "read_journal", "verify_chains"]
