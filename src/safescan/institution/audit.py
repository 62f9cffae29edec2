"""The hash-chained audit log: every state change appends one entry inside its own transaction.

The log is ``CHAINS`` independent hash chains (an entity always goes to the same chain), so that
concurrent transactions on different entities do not queue on one lock. Entry ``n`` of a chain
stores ``hash = SHA-256(canonical JSON [prev_hash, chain, seq, at, actor, action, entity, data])``
(``data`` holds ``request_id``, the id of the HTTP request that wrote the entry, when there was one)
and ``prev_hash`` = hash of entry ``n - 1`` (64 zeros for the first); ``audit_heads`` holds each
chain's last (seq, hash) and is row-locked while appending. Entries are immutable (triggers).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from safescan.api.obslog import current_request_id
from safescan.institution import sql
from safescan.institution.models import AuditEntry, AuditHead
from safescan.institution.util import canonical_json

CHAINS = 16
GENESIS = "0" * 64


def chain_for(entity: str) -> int:
    """The chain an entity's entries go to."""
    return zlib.crc32(entity.encode()) % CHAINS


def entry_tail(at: int, actor: str, action: str, entity: str, data: str) -> str:
    """The part of an entry's canonical JSON after ``seq``: ``at,"actor",...,"data"]``.

    Everything a writer knows before it takes its position on the chain. PostgreSQL's
    ``safescan_pay_order`` prefixes it with ``["prev_hash",chain,seq,`` and hashes it in the
    database (ASCII only: ``json.dumps`` escapes everything else), so both give the same hash.
    """
    return canonical_json([at, actor, action, entity, data])[1:]  # a list: nothing to sort


def entry_hash(
    prev_hash: str, chain: int, seq: int, at: int, actor: str, action: str, entity: str, data: str
) -> str:
    """The hash of one entry: SHA-256 of the canonical JSON
    ``[prev_hash, chain, seq, at, actor, action, entity, data]`` (see the module docstring)."""
    doc = f"[{json.dumps(prev_hash)},{chain},{seq}," + entry_tail(at, actor, action, entity, data)
    return hashlib.sha256(doc.encode()).hexdigest()


def batch_rows_sha256(rows: list[dict[str, Any]]) -> str:
    """What a bulk order precreation's entry records of its orders (the audit recomputes it)."""
    fields = ("order_id", "total", "currency", "expires_at", "items")
    doc = [[*(r[f] for f in fields), r["code_digest"].hex()] for r in rows]
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def create_heads(conn: Connection) -> None:
    """Create the empty chains (at init)."""
    existing = {c for (c,) in conn.execute(select(AuditHead.chain))}
    rows = [{"chain": c, "seq": 0, "hash": GENESIS} for c in range(CHAINS) if c not in existing]
    if rows:
        conn.execute(insert(AuditHead), rows)


def reserve(conn: Connection, entity: str) -> tuple[int, int, str]:
    """Take the next position on the entity's chain: (chain, seq, previous hash).

    The head row stays locked until the transaction ends, so positions are never shared.
    """
    chain = chain_for(entity)
    seq, prev_hash = sql.run(conn, sql.AUDIT_RESERVE, {"chain": chain}).fetchone()
    return chain, int(seq), str(prev_hash)


def stamped(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the current request's id (``request_id``), when a request is being
    served: every entry says which request wrote it (the hash covers it; the audit reads it
    apart from the checked fields)."""
    rid = current_request_id()
    if rid is None or "request_id" in data:
        return data
    return {**data, "request_id": rid}


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """An entry written out before its position on the chain is known: its data's canonical
    JSON and the hashed text after ``seq`` (:func:`entry_tail`) are made before the transaction,
    so the writer only adds the position and hashes (the payment path: :func:`prepare_entry`)."""

    at: int
    actor: str
    action: str
    entity: str
    data: str  # canonical JSON, request id stamped
    tail: str

    def params(self, chain: int, seq: int, prev_hash: str) -> dict[str, Any]:
        """The ``a_*`` parameters of :data:`sql.INSERT_AUDIT` at position ``seq`` of ``chain``."""
        doc = f"[{json.dumps(prev_hash)},{chain},{seq}," + self.tail
        return {
            "a_chain": chain,
            "a_seq": seq,
            "a_at": self.at,
            "a_actor": self.actor,
            "a_action": self.action,
            "a_entity": self.entity,
            "a_data": self.data,
            "a_prev_hash": prev_hash,
            "a_hash": hashlib.sha256(doc.encode()).hexdigest(),
        }


def prepare_entry(
    *, at: int, actor: str, action: str, entity: str, data: dict[str, Any]
) -> PreparedEntry:
    """An entry's text, ``data`` :func:`stamped` with the current request's id (call it in
    the request's context)."""
    text = canonical_json(stamped(data))
    return PreparedEntry(
        at, actor, action, entity, text, entry_tail(at, actor, action, entity, text)
    )


def entry_params(
    chain: int,
    seq: int,
    prev_hash: str,
    *,
    at: int,
    actor: str,
    action: str,
    entity: str,
    data: dict[str, Any],
) -> dict[str, Any]:
    """The ``a_*`` parameters of :data:`sql.INSERT_AUDIT` for one entry (hash included;
    ``data`` :func:`stamped` with the request id)."""
    entry = prepare_entry(at=at, actor=actor, action=action, entity=entity, data=data)
    return entry.params(chain, seq, prev_hash)


def append(
    conn: Connection, *, at: int, actor: str, action: str, entity: str, data: dict[str, Any]
) -> None:
    """Append one entry to the entity's chain (call inside the state change's transaction)."""
    chain, seq, prev_hash = reserve(conn, entity)
    params = entry_params(
        chain, seq, prev_hash, at=at, actor=actor, action=action, entity=entity, data=data
    )
    sql.run(conn, sql.INSERT_AUDIT, params)
    sql.run(conn, sql.AUDIT_SET_HASH, params)


def verify_chains(conn: Connection) -> Iterator[str]:
    """Yield a description of every break in the chains (nothing if the log is intact)."""
    heads = {r.chain: (r.seq, r.hash) for r in conn.execute(select(AuditHead))}
    if set(heads) != set(range(CHAINS)):
        yield f"audit heads missing: expected chains 0..{CHAINS - 1}, found {sorted(heads)}"
    state = {c: (0, GENESIS) for c in range(CHAINS)}
    rows = conn.execution_options(yield_per=2000).execute(
        select(AuditEntry).order_by(AuditEntry.chain, AuditEntry.seq)
    )
    for r in rows:
        seq, prev = state.get(r.chain, (0, GENESIS))
        if r.chain not in state:
            yield f"audit entry {r.id} is on unknown chain {r.chain}"
            continue
        if r.seq != seq + 1:
            yield f"audit chain {r.chain}: entry {r.seq} follows {seq} (gap or reorder)"
        if r.prev_hash != prev:
            yield f"audit chain {r.chain}: entry {r.seq} does not link to its predecessor"
        expect = entry_hash(r.prev_hash, r.chain, r.seq, r.at, r.actor, r.action, r.entity, r.data)
        if r.hash != expect:
            yield f"audit chain {r.chain}: entry {r.seq} was altered (hash mismatch)"
        state[r.chain] = (r.seq, r.hash)
    for chain, (seq, digest) in heads.items():
        if state.get(chain) != (seq, digest):
            yield f"audit chain {chain}: head ({seq}) does not match the last entry (truncated?)"
