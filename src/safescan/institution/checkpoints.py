"""Signed checkpoints of the audit log's head, kept outside the database, to recognise a
database restored from an older copy (a rollback) and to keep serials from ever repeating.

The checkpoint file (default: ``<key directory>.checkpoints``, beside the key directory, never
inside a database backup) is append-only JSON lines, each one record signed by the institution's
root key (``Ed25519(root, "SS1-CKPT\\n" + canonical JSON of the record without "sig")``),
written with ``O_APPEND`` and ``fsync`` under an ``flock``. Record types:

``checkpoint``  the 16 audit chains' head sequence numbers and a digest of their hashes, and
                high-water marks (certificate serial, revocation list sequence, event seq);
                written by every API process at most once per interval while the log grows.
``issue``       a certificate serial is being issued (role, subject): written and fsync'd
                before its transaction commits; a serial is never issued twice, even by a
                restored database (:mod:`.reservations`).
``revoke``      a revocation (serials, revocation list sequence), written before it commits.
``reconcile``   an operator accepted the database as it is (``safescan institution
                reconcile``, or ``restore`` of a backup: then with ``"restore": {backup
                digest, time taken, reason}``, an *acknowledged restore*); only records after
                the newest one are compared with the database.

Every record names the database (``db``: the hash of its ``institution.init`` audit entry). A
database is *rolled back* when it does not contain the newest checkpointed head (an entry is
missing or its hash differs). A journaled revocation the database lacks is reported apart
(its transaction may have failed, or the database was restored): ``reconcile`` applies it.

**The records are a hash chain** (:mod:`.checkpoint_file`): each carries the SHA-256 of the line
before it (``prev``) and its position (``n``), under its signature, and every reader checks the
chain before it believes a record's *place*: "the newest ``reconcile``" is only the newest if no
older one was replayed after it. Whoever can write the file but not sign can still cut it short:
so the database keeps the chain's head (``checkpoint_head``, by the file's name: the newest
position and hash it knows was appended, moved forward after every append; hosts that share a
database and each keep a file give their files distinct names), and a file that is missing,
ends before that position or holds another record there is refused like a broken chain.
Files written before the chain still read: their records form a *legacy prefix* that the first
chained record's ``prev`` (the SHA-256 of all those lines) freezes; a record without a link
after a chained one is refused. A broken chain, a truncated or missing file is
:class:`CheckpointChainBroken`: the API processes refuse to serve (``database_rolled_back``,
503, also on ``/readyz``), the audit reports it, and the operator restores the file from its
copy or, if it is lost, runs ``safescan institution reconcile --restart-checkpoints --note ...``
(docs/operations.md, "A broken checkpoint chain").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from safescan.code import strictjson
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.institution.audit import CHAINS, GENESIS
from safescan.institution.checkpoint_file import (
    CONTEXT,
    VERSION,
    Chain,
    CheckpointChainBroken,
    CheckpointError,
    CheckpointFile,
    CheckpointUnavailable,
    Head,
    read_error,
    read_file,
    sign,
    split_lines,
)
from safescan.institution.models import (
    AuditEntry,
    AuditHead,
    CertificateRow,
    CheckpointHead,
    Counter,
    Event,
)
from safescan.institution.util import canonical_json

TYPES = ("checkpoint", "issue", "revoke", "reconcile")
MAX_BYTES = 8 << 20  # the file is compacted beyond this size


def default_path(key_dir: Path) -> Path:
    """``<key directory>.checkpoints``: beside the key directory, not inside it."""
    key_dir = Path(key_dir)
    return key_dir.with_name(key_dir.name + ".checkpoints")


# --- records ------------------------------------------------------------------------------


def when(at: object) -> str:
    """A record's time for people: ISO 8601 UTC."""
    import datetime as dt

    if isinstance(at, int) and not isinstance(at, bool):
        return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return repr(at)


def heads_digest(heads: list[tuple[int, str]]) -> str:
    """SHA-256 of the chains' (seq, hash) pairs, chain 0 first."""
    return hashlib.sha256(canonical_json([[s, h] for s, h in heads]).encode()).hexdigest()


def parse(line: str, trust: TrustStore) -> dict[str, Any]:
    """Verify and decode one record; raises :class:`CheckpointError`."""
    import base64

    try:
        # the strict rule: a record naming a field twice is refused (json.loads kept the last,
        # so a signed record could carry a second, unsigned value for whoever reads the first)
        doc = strictjson.loads(line.encode("utf-8", "surrogateescape"))
        if not isinstance(doc, dict):
            raise TypeError
        sig = base64.b64decode(doc.pop("sig"), validate=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError("a checkpoint record is not a signed JSON object") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION or doc.get("type") not in TYPES:
        raise CheckpointError("a checkpoint record has an unknown version or type")
    try:
        trust.institution_key(doc.get("kid", -1)).verify(
            sig, CONTEXT + canonical_json(doc).encode(), what="checkpoint signature"
        )
    except SafescanError as exc:
        raise CheckpointError(f"a checkpoint record does not verify: {exc.message}") from None
    return doc


# --- the database's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class DbState:
    """What a checkpoint records about the database."""

    db: str
    heads: list[tuple[int, str]]
    serial: int
    crl: int
    event: int
    head: Head = field(default_factory=Head)  # the checkpoint file's, as the database saw it

    def body(self, at: int) -> dict[str, Any]:
        """The ``checkpoint`` record's fields."""
        return {
            "type": "checkpoint",
            "db": self.db,
            "at": at,
            "seqs": [s for s, _ in self.heads],
            "digest": heads_digest(self.heads),
            "marks": {"serial": self.serial, "crl": self.crl, "event": self.event},
        }


def database_id(conn: Connection) -> str | None:
    """The hash of the database's ``institution.init`` entry (None before init)."""
    return conn.execute(
        select(AuditEntry.hash).where(AuditEntry.action == "institution.init").limit(1)
    ).scalar_one_or_none()


def read_state(conn: Connection, file: str | None = None) -> DbState | None:
    """The committed heads and high-water marks (None for an uninitialised database); with
    ``file`` (a checkpoint file's name), the database's head of that file."""
    db = database_id(conn)
    if db is None:
        return None
    # one statement: on PostgreSQL (READ COMMITTED) two would see different commits
    rows = conn.execute(select(AuditHead.chain, AuditHead.seq, AuditHead.hash)).all()
    heads = {int(c): int(s) for c, s, _ in rows}
    hashes = {int(c): str(h) for c, _, h in rows}
    counters = dict(conn.execute(select(Counter.name, Counter.value)).all())
    serial = conn.execute(select(func.coalesce(func.max(CertificateRow.serial), 0))).scalar_one()
    event = conn.execute(select(func.coalesce(func.max(Event.seq), 0))).scalar_one()
    return DbState(
        db=db,
        heads=[(int(heads.get(c, 0)), str(hashes.get(c, ""))) for c in range(CHAINS)],
        serial=max(int(serial), int(counters.get("certificate_serial", 0))),
        crl=int(counters.get("crl_sequence", 0)),
        event=int(event),
        head=Head() if file is None else read_head(conn, file),
    )


def read_head(conn: Connection, file: str) -> Head:
    """The head of the checkpoint file named ``file`` as the database last saw it (``Head()``
    when it never saw one)."""
    found = conn.execute(
        select(CheckpointHead.n, CheckpointHead.hash).where(CheckpointHead.name == file)
    ).first()
    return Head() if found is None else Head(int(found[0]), str(found[1]))


def save_head(conn: Connection, file: str, head: Head) -> None:
    """Move the database's head of the checkpoint file named ``file`` forward to ``head``
    (never back). Called after the records are appended and fsync'd, so the file always
    reaches at least as far as the database says."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(CheckpointHead).values(name=file, n=head.n, hash=head.hash)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[CheckpointHead.name],
            set_={"n": stmt.excluded.n, "hash": stmt.excluded.hash},
            where=CheckpointHead.n < stmt.excluded.n,
        )
    )


# --- rollback detection -------------------------------------------------------------------


@dataclass
class Lookup:
    """How the detector sees the database: entry hashes by (chain, seq), revoked serials."""

    hash_at: Callable[[list[tuple[int, int]]], dict[tuple[int, int], str]]
    revoked: Callable[[list[int]], tuple[set[int], set[int]]]  # (existing, revoked) serials


@dataclass
class Verdict:
    """The comparison of a database with its checkpoint file."""

    rolled_back: list[str] = field(default_factory=list)
    unapplied: list[int] = field(default_factory=list)  # journaled revocations not in the db
    notes: list[str] = field(default_factory=list)
    newest: dict[str, Any] | None = None
    since_reconcile: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def read_records(
    file: CheckpointFile | list[str],
    trust: TrustStore,
    db: str | None,
    head: Head | None = None,
    *,
    exists: bool = True,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The verified records of this database (from the file, or lines read from it), and a
    problem per record that does not verify, belongs elsewhere or breaks the chain; with the
    database's ``head``, also a file that is missing, truncated or replaced."""
    records, problems = [], []
    path = Path("the checkpoint file")
    if isinstance(file, CheckpointFile):
        path, exists = file.path, file.exists()
    lines = file.lines() if isinstance(file, CheckpointFile) else file
    chain = Chain()
    for n, line in enumerate(lines, 1):
        broken = chain.feed(line)
        if broken is not None:
            problems.append(f"checkpoint file line {n}: {broken}")
        try:
            rec = parse(line, trust)
        except CheckpointError as exc:
            problems.append(f"checkpoint file line {n}: {exc.message}")
            continue
        if db is not None and rec.get("db") != db:
            problems.append(f"checkpoint file line {n} belongs to another database")
            continue
        records.append(rec)
    problems += chain.against(head, path, exists)
    return records, problems


def chain_problems(problems: list[str]) -> CheckpointChainBroken:
    """The typed error for a checkpoint file with ``problems``."""
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return CheckpointChainBroken(
        "the checkpoint file is not the chain the institution wrote: "
        + "; ".join(problems[:3])
        + more
    )


def detect(records: list[dict[str, Any]], look: Lookup) -> Verdict:
    """Does the database contain everything the records (since the last reconcile) saw?"""
    v = Verdict(records=records)
    start = max((i for i, r in enumerate(records) if r["type"] == "reconcile"), default=-1)
    v.since_reconcile = records[start + 1 :]
    checkpoints = [r for r in v.since_reconcile if r["type"] == "checkpoint"]
    if checkpoints:
        v.newest = newest = checkpoints[-1]
        v.rolled_back += _missing_heads(newest, look)
    elif start >= 0 and "seqs" in records[start]:
        # the file cut short right after a reconcile: the heads it recorded must be there too
        v.rolled_back += _missing_heads(records[start], look, "reconciliation")
    revoked = [s for r in v.since_reconcile if r["type"] == "revoke" for s in r["serials"]]
    if revoked:
        existing, done = look.revoked(revoked)
        v.unapplied = sorted(s for s in revoked if s in existing and s not in done)
    if start >= 0:
        rec = records[start]
        restore = rec.get("restore")
        if isinstance(restore, dict):
            v.notes.append(
                f"acknowledged restore at {when(rec['at'])} of the backup taken at"
                f" {when(restore.get('taken_at'))} (sha256 {str(restore.get('backup_sha256'))[:16]}"
                f"...): {restore.get('reason')!r}"
            )
        else:
            v.notes.append(f"the database was reconciled at {when(rec['at'])}")
    return v


def _missing_heads(cp: dict[str, Any], look: Lookup, what: str = "checkpoint") -> list[str]:
    seqs = cp.get("seqs")
    if not isinstance(seqs, list) or len(seqs) != CHAINS:
        return [f"the newest {what} is malformed"]
    wanted = [(c, s) for c, s in enumerate(seqs) if s > 0]
    found = look.hash_at(wanted)
    missing = [(c, s) for c, s in wanted if (c, s) not in found]
    if missing:
        chains = ", ".join(f"chain {c} entry {s}" for c, s in missing[:8])
        return [
            f"the database lacks audit entries the institution had written ({what} of"
            f" {when(cp['at'])}: {chains}{' ...' if len(missing) > 8 else ''}): it was"
            " restored from an older copy"
        ]
    heads = [(s, found[(c, s)]) if s > 0 else (0, GENESIS) for c, s in enumerate(seqs)]
    # reconciliations before the chain recorded no digest: their positions are checked
    dated = "digest" in cp or what == "checkpoint"
    if dated and heads_digest(heads) != cp.get("digest"):
        return [
            f"the database's audit log differs from the {what} of {when(cp['at'])} (same"
            " positions, other entries): it is not the database the institution wrote"
        ]
    return []


def db_lookup(conn: Connection) -> Lookup:
    """A :class:`Lookup` over a live database connection."""

    def hash_at(wanted: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        if not wanted:
            return {}
        rows = conn.execute(
            select(AuditEntry.chain, AuditEntry.seq, AuditEntry.hash).where(
                tuple_(AuditEntry.chain, AuditEntry.seq).in_(wanted)
            )
        ).all()
        return {(int(c), int(s)): str(h) for c, s, h in rows}

    def revoked(serials: list[int]) -> tuple[set[int], set[int]]:
        rows = conn.execute(
            select(CertificateRow.serial, CertificateRow.revoked_at).where(
                CertificateRow.serial.in_(serials)
            )
        ).all()
        return {int(s) for s, _ in rows}, {int(s) for s, r in rows if r is not None}

    return Lookup(hash_at, revoked)


def essential(kept: list[tuple[dict[str, Any], str]]) -> list[tuple[dict[str, Any], str]]:
    """The records that still matter, oldest first: the newest reconcile, and after it every
    revocation, the highest issued serial and the newest checkpoint (what compaction keeps)."""
    start = max((i for i, (r, _) in enumerate(kept) if r["type"] == "reconcile"), default=-1)
    head = [kept[start]] if start >= 0 else []
    rest = kept[start + 1 :]
    revokes = [x for x in rest if x[0]["type"] == "revoke"]
    issues = [x for x in rest if x[0]["type"] == "issue"]
    checkpoints = [x for x in rest if x[0]["type"] == "checkpoint"]
    top = [max(issues, key=lambda x: int(x[0]["serial"]))] if issues else []
    newest = checkpoints[-1:]
    chosen = {id(x) for x in head + revokes + top + newest}
    return [x for x in kept if id(x) in chosen]


def essential_records(lines: list[str], trust: TrustStore, db: str) -> list[dict[str, Any]]:
    """The :func:`essential` records of a file's lines (what compaction keeps); a file that
    does not verify or whose chain is broken is not compacted (:class:`CheckpointChainBroken`):
    its records' order could not be trusted."""
    records, problems = read_records(lines, trust, db)
    if problems:
        raise chain_problems(problems)
    return [r for r, _ in essential([(r, "") for r in records])]


class Tail:
    """An incremental reader of the checkpoint file: only new lines are read, verified and
    checked against the chain; the essential records are kept (a compaction, seen as a new
    inode, starts it over)."""

    def __init__(self, file: CheckpointFile) -> None:
        self.file = file
        self.kept: list[tuple[dict[str, Any], str]] = []
        self.problems: list[str] = []
        self.lost: list[str] = []  # missing, truncated or replaced, against the database's head
        self.chain = Chain()
        self._ino: int | None = None
        self._offset = 0
        self._line = 0

    def _restart(self, ino: int | None) -> None:
        self._ino, self._offset, self._line, self.kept = ino, 0, 0, []
        self.problems, self.chain = [], Chain()

    def refresh(self, trust: TrustStore, db: str, head: Head | None = None) -> list[dict[str, Any]]:
        """Read what was appended since the last call; returns the essential records. Problems
        accumulate in :attr:`problems`; :attr:`lost` says, each time, whether the file is
        missing or shorter than the database's ``head``."""
        try:
            with self.file.locked(False):
                st = os.stat(self.file.path)
                if st.st_ino != self._ino or st.st_size < self._offset:
                    self._restart(st.st_ino)
                data = read_file(self.file.path, self._offset)
        except FileNotFoundError:
            self._restart(None)
            self.lost = self.chain.against(head, self.file.path, False)
            return []
        except OSError as exc:
            raise read_error(exc) from None
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in split_lines(complete):
            self._line += 1
            broken = self.chain.feed(raw)
            if broken is not None:
                self.problems.append(f"checkpoint file line {self._line}: {broken}")
            try:
                rec = parse(raw, trust)
            except CheckpointError as exc:
                self.problems.append(f"checkpoint file line {self._line}: {exc.message}")
                continue
            if rec.get("db") != db:
                self.problems.append(
                    f"checkpoint file line {self._line} belongs to another database"
                )
                continue
            self.kept = essential([*self.kept, (rec, raw)])
        self.lost = self.chain.against(head, self.file.path, True)
        return [r for r, _ in self.kept]


def high_water(records: list[dict[str, Any]]) -> dict[str, int]:
    """The highest serial, revocation list sequence and event seq any record names."""
    marks = {"serial": 0, "crl": 0, "event": 0}
    for r in records:
        if r["type"] in ("checkpoint", "reconcile"):
            for k in marks:
                marks[k] = max(marks[k], int(r.get("marks", {}).get(k, 0)))
        elif r["type"] == "issue":
            marks["serial"] = max(marks["serial"], int(r["serial"]))
        elif r["type"] == "revoke":
            marks["crl"] = max(marks["crl"], int(r["crl"]))
    return marks


__all__ = [
    "Chain",
    "CheckpointChainBroken",
    "CheckpointError",
    "CheckpointFile",
    "CheckpointUnavailable",
    "DbState",
    "Head",
    "Lookup",
    "Tail",
    "Verdict",
    "chain_problems",
    "database_id",
    "db_lookup",
    "default_path",
    "detect",
    "essential",
    "essential_records",
    "heads_digest",
    "high_water",
    "parse",
    "read_head",
    "read_records",
    "read_state",
    "save_head",
    "sign",
]
