"""The checkpoint file's hash chain and the database's head of it, attacked.

Whoever can write the file but not sign rearranges genuine records: an older reconcile (or
acknowledged restore) replayed after a later silent restore, a record moved, deleted from the
middle, duplicated, spliced in from another file of the same or another institution, a record
from before the chain appended after it, the file truncated, replaced or deleted. Each must be
reported (never silently believed), while files written before the chain keep reading, and
processes appending at once keep one chain.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from safescan.code.certs import TrustStore
from safescan.code.keys import SigningKey
from safescan.institution.checkpoints import (
    CheckpointChainBroken,
    CheckpointFile,
    Head,
    Lookup,
    Tail,
    detect,
    essential_records,
    heads_digest,
    read_head,
    read_records,
    sign,
)
from safescan.institution.models import AuditEntry, Counter
from safescan.institution.reconcile import reconcile
from safescan.institution.reservations import Journal
from safescan.institution.rollback import RollbackGuard
from tests.faults.populate import Populated, populated_on
from tests.institution.conftest import BACKENDS
from tests.institution.test_checkpoints import _enroll

SEED = bytes(range(32))
KEY = SigningKey.from_seed(SEED)
TRUST = TrustStore({1: KEY.public_key})
H = {n: f"h{n}" for n in range(1, 9)}  # chain 0's entry hashes in the "database"


def _heads(top: int) -> list[tuple[int, str]]:
    return [(top, H[top])] + [(0, "0" * 64)] * 15


def _cp(at: int, top: int, db: str = "D") -> dict[str, Any]:
    return {
        "type": "checkpoint",
        "db": db,
        "at": at,
        "seqs": [top] + [0] * 15,
        "digest": heads_digest(_heads(top)),
        "marks": {"serial": 1, "crl": 1, "event": 1},
    }


def _reconcile(at: int, top: int) -> dict[str, Any]:
    return {**_cp(at, top), "type": "reconcile", "restore": {"reason": "disk lost", "taken_at": 0}}


def _lookup(top: int) -> Lookup:
    """A database holding chain 0's entries 1..top (a copy taken when the log was there)."""
    have = {(0, s): H[s] for s in range(1, top + 1)}
    return Lookup(
        lambda wanted: {k: have[k] for k in wanted if k in have},
        lambda serials: (set(serials), set()),
    )


def _story(path: Path) -> list[str]:
    """Checkpoint (entry 1), an acknowledged restore (entries 2), checkpoints of entries 3, 5
    and 6: the file the institution wrote."""
    f = CheckpointFile(path)
    f.append(KEY, 1, [_cp(1, 1)])
    f.append(KEY, 1, [_reconcile(2, 2), _cp(2, 2)])
    f.append(KEY, 1, [_cp(3, 3)])
    f.append(KEY, 1, [_cp(4, 5), _cp(5, 6)])
    return f.lines()


def _other_file(path: Path, db: str = "D", key: SigningKey = KEY) -> list[str]:
    """Another chain (another host's file of the same database, or another institution's)."""
    f = CheckpointFile(path)
    f.append(key, 1, [_cp(1, 1, db), _reconcile(7, 4) | {"db": db}, _cp(8, 4, db)])
    return f.lines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def test_the_chain_the_institution_wrote_reads_clean_and_a_silent_restore_is_seen(
    tmp: Path,
) -> None:
    lines = _story(tmp / "cp")
    records, problems = read_records(lines, TRUST, "D")
    assert problems == []
    assert [r["n"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == hashlib.sha256(b"").hexdigest()
    for a, b in zip(lines, records[1:], strict=False):
        assert b["prev"] == hashlib.sha256(a.encode()).hexdigest()
    # a copy taken right after the acknowledged restore (entries 1-2) put back silently
    assert detect(records, _lookup(2)).rolled_back
    assert detect(records, _lookup(6)).rolled_back == []


ATTACKS: dict[str, Callable[[list[str], Path], list[str]]] = {
    # the older acknowledgement appended again after the later silent restore
    "older reconcile replayed": lambda ls, _: [*ls, ls[1]],
    "reconcile and its checkpoint replayed": lambda ls, _: [*ls, ls[1], ls[2]],
    "reconcile moved to the end": lambda ls, _: [*ls[:1], *ls[2:], ls[1]],
    "checkpoints deleted from the middle": lambda ls, _: [*ls[:3], ls[5]],
    "the newest checkpoint deleted, an older one duplicated": lambda ls, _: [*ls[:5], ls[3]],
    "a genuine record duplicated in place": lambda ls, _: [*ls[:3], ls[2], *ls[3:]],
    "records swapped": lambda ls, _: [ls[0], ls[1], ls[2], ls[4], ls[3], ls[5]],
    "spliced from another file of the same database": lambda ls, t: [
        *ls,
        *_other_file(t / "other")[1:],
    ],
    "spliced from another institution's file": lambda ls, t: [
        *ls,
        _other_file(t / "foreign", "X", SigningKey.generate())[1],
    ],
    "a record from before the chain appended": lambda ls, _: [
        *ls,
        sign(KEY, 1, _reconcile(9, 2)),
    ],
    "a damaged line in the middle": lambda ls, _: [*ls[:2], ls[2][:-9] + "AAAAAAAA=", *ls[3:]],
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_rearranged_genuine_records_break_the_chain(tmp: Path, attack: str) -> None:
    """Each rearrangement is reported; where the records' positions alone would have hidden
    the silent restore (a database with entries 1-2 behind checkpoints of 3-6), the chain is
    what catches it."""
    lines = _story(tmp / "cp")
    forged = ATTACKS[attack](lines, tmp)
    trust = TrustStore({1: KEY.public_key})
    records, problems = read_records(forged, trust, "D")
    assert problems, attack
    assert any(
        "chain is broken" in p or "without a chain link" in p or "does not verify" in p
        for p in problems
    )
    if attack in ("older reconcile replayed", "reconcile moved to the end"):
        # by position the replayed acknowledgement would be "the newest": nothing compared
        assert detect(records, _lookup(2)).rolled_back == []
    # the file as it is on disk: the guard's incremental reader sees the same
    f = CheckpointFile(tmp / "forged")
    _write(f.path, forged)
    tail = Tail(f)
    tail.refresh(trust, "D")
    assert tail.problems
    # and it is neither compacted (its order cannot be trusted) nor changed by trying
    with pytest.raises(CheckpointChainBroken):
        f.compact(KEY, 1, lambda ls: essential_records(ls, trust, "D"))
    assert f.lines() == forged


def test_truncation_replacement_and_deletion_against_the_database_head(tmp: Path) -> None:
    """A cut-short prefix of a chain is a valid chain: what the database saw written tells."""
    f = CheckpointFile(tmp / "cp")
    lines = _story(f.path)
    head = Head(6, hashlib.sha256(lines[-1].encode()).hexdigest())
    assert read_records(f, TRUST, "D", head)[1] == []
    for keep in (0, 1, 3, 5):
        _write(f.path, lines[:keep])
        problems = read_records(f, TRUST, "D", head)[1]
        assert len(problems) == 1 and f"ends at record {keep}" in problems[0], keep
        tail = Tail(f)
        tail.refresh(TRUST, "D", head)
        assert tail.lost == problems and tail.problems == []
        # and nobody extends it: a process appending would hide the cut
        with pytest.raises(CheckpointChainBroken, match="truncated"):
            f.append(KEY, 1, [_cp(9, 6)], floor=head)
        assert f.lines() == lines[:keep]
    # another chain as long as the one the database saw: replaced
    other = CheckpointFile(tmp / "o")
    other.append(KEY, 1, [_cp(at, 1) for at in range(10, 17)])
    _write(f.path, other.lines())
    problems = read_records(f, TRUST, "D", head)[1]
    assert any("was replaced" in p for p in problems)
    # deleted: missing, and not started again behind the database's back
    f.path.unlink()
    problems = read_records(f, TRUST, "D", head)[1]
    assert len(problems) == 1 and "is missing" in problems[0]
    with pytest.raises(CheckpointChainBroken, match="missing"):
        f.append(KEY, 1, [_cp(9, 6)], floor=head)
    assert not f.exists()
    # a database that never saw a chained record (before this release): a new file is fine
    assert f.append(KEY, 1, [_cp(9, 6)], floor=Head()) == Head(
        1, hashlib.sha256(f.lines()[0].encode()).hexdigest()
    )


def test_a_file_from_before_the_chain_reads_and_its_prefix_is_frozen(tmp: Path) -> None:
    f = CheckpointFile(tmp / "cp")
    legacy = [sign(KEY, 1, _cp(1, 1)), sign(KEY, 1, _reconcile(2, 2)), sign(KEY, 1, _cp(3, 3))]
    _write(f.path, legacy)
    assert read_records(f, TRUST, "D")[1] == []
    head = f.append(KEY, 1, [_cp(4, 5)])
    lines = f.lines()
    first = json.loads(lines[3])
    assert head.n == first["n"] == 4
    assert first["prev"] == hashlib.sha256("".join(x + "\n" for x in legacy).encode()).hexdigest()
    f.append(KEY, 1, [_cp(5, 6)])
    records, problems = read_records(f, TRUST, "D")
    assert problems == [] and [r.get("n") for r in records] == [None, None, None, 4, 5]
    tampered = {
        "legacy records reordered": [legacy[1], legacy[0], *f.lines()[2:]],
        "a legacy record deleted": [legacy[0], *f.lines()[2:]],
        "the legacy reconcile replayed at the end": [*f.lines(), legacy[1]],
        "the legacy prefix dropped": f.lines()[3:],
    }
    for name, forged in tampered.items():
        assert read_records(forged, TRUST, "D")[1], name


def test_a_torn_last_line_is_cut_before_the_next_record(tmp: Path) -> None:
    f = CheckpointFile(tmp / "cp")
    f.append(KEY, 1, [_cp(1, 1)])
    torn = sign(KEY, 1, {**_cp(2, 2), "prev": "x", "n": 2})[:50]
    with f.path.open("a") as raw:
        raw.write(torn)  # a crash in the middle of a write
    assert len(f.lines()) == 1
    f.append(KEY, 1, [_cp(3, 3)])
    records, problems = read_records(f, TRUST, "D")
    assert problems == [] and [r["n"] for r in records] == [1, 2]
    assert torn not in f.path.read_text()


def test_compaction_chains_on_and_its_start_cannot_be_moved(tmp: Path) -> None:
    f = CheckpointFile(tmp / "cp")
    _story(f.path)
    head = f.compact(KEY, 1, lambda ls: essential_records(ls, TRUST, "D"))
    lines = f.lines()
    records, problems = read_records(f, TRUST, "D", head)
    assert problems == [] and records[0]["compacted"] is True
    assert [r["n"] for r in records] == [7, 8] and head.n == 8
    assert [r["type"] for r in records] == ["reconcile", "checkpoint"]
    # the compacted start dropped: the next record's link points at nothing in the file
    assert read_records(lines[1:], TRUST, "D")[1]
    # the compacted start spliced after later records
    f.append(KEY, 1, [_cp(9, 7)])
    assert read_records([*f.lines()[1:], f.lines()[0]], TRUST, "D")[1]


_APPENDER = """
import sys
from pathlib import Path
from safescan.code.keys import SigningKey
from safescan.institution.checkpoints import CheckpointFile
key = SigningKey.from_seed(bytes.fromhex(sys.argv[1]))
f = CheckpointFile(Path(sys.argv[2]))
who, count = sys.argv[3], int(sys.argv[4])
for i in range(count):
    body = {"type": "issue", "db": "D", "at": i, "serial": i, "role": "carrier",
            "subject": who}
    f.append(key, 1, [body] * (1 + i % 2))
"""


def test_processes_appending_at_once_keep_one_chain(tmp: Path) -> None:
    """Three processes append (one or two records at a time) while this one reads the file
    incrementally: one chain, every record in it once, no reader ever sees a break."""
    f = CheckpointFile(tmp / "cp")
    count = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, SEED.hex(), str(f.path), who, str(count)],
        )
        for who in ("a", "b", "c")
    ]
    tail = Tail(f)
    while any(p.poll() is None for p in procs):
        tail.refresh(TRUST, "D")
        assert tail.problems == []
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    tail.refresh(TRUST, "D")
    assert tail.problems == []
    records, problems = read_records(f, TRUST, "D")
    per_process = count + count // 2
    assert problems == [] and len(records) == 3 * per_process
    assert [r["n"] for r in records] == list(range(1, 3 * per_process + 1))
    for who in "abc":
        assert sum(1 for r in records if r["subject"] == who) == per_process


# --- with a database ---------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def populated(request: pytest.FixtureRequest) -> Iterator[Populated]:
    with populated_on(request, payments=3) as p:
        yield p


def _grow(p: Populated) -> None:
    """One more audit entry (a customer), so the guard has something to checkpoint."""
    p.inst.customers.create("Someone")


def test_the_database_keeps_the_head_and_the_guard_refuses_a_cut_or_deleted_file(
    populated: Populated,
) -> None:
    p = populated
    path = p.keys.with_name("keys.checkpoints")
    p.inst.journal = Journal(CheckpointFile(path), p.inst.keys)
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    for _ in range(3):
        _grow(p)
        guard.tick()
    lines = CheckpointFile(path).lines()
    head = p.inst.db.read(lambda c: read_head(c, path.name))
    assert head == Head(len(lines), hashlib.sha256(lines[-1].encode()).hexdigest())
    assert guard.refusal is None

    # truncated to an earlier length: refused, with the way out in the reason
    _write(path, lines[:2])
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    assert guard.refusal is not None and "ends at record 2" in guard.refusal
    err = guard.error()
    assert err is not None and err.code == "database_rolled_back" and "restart" in err.message
    assert CheckpointFile(path).lines() == lines[:2]  # and nothing appended to hide it
    _write(path, lines)
    guard.tick()
    assert guard.refusal is None

    # deleted: refused, not started again; serials are not issued against a missing journal
    path.unlink()
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    assert guard.refusal is not None and "is missing" in guard.refusal
    assert not path.exists()
    serial_before = p.inst.db.read(
        lambda c: c.execute(select(Counter.value).where(Counter.name == "certificate_serial"))
    ).scalar_one()
    token = p.inst.customers.issue_enrollment_token(p.customers[0]).token
    p.inst.journal = Journal(CheckpointFile(path), p.inst.keys)
    with pytest.raises(CheckpointChainBroken, match="missing"):
        _enroll(p.inst, token)
    assert not path.exists()
    assert (
        p.inst.db.read(
            lambda c: c.execute(select(Counter.value).where(Counter.name == "certificate_serial"))
        ).scalar_one()
        == serial_before
    )
    # plain reconcile refuses (typed); the explicit restart starts a new chain past the head
    with pytest.raises(CheckpointChainBroken):
        reconcile(p.inst.db, p.inst.keys, path, note="file lost")
    out = reconcile(p.inst.db, p.inst.keys, path, note="file lost", restart=True)
    assert out["reconciled"] and out["restart"]["starts_at"] == len(lines) + 1
    assert out["restart"]["moved_to"] is None
    records, problems = read_records(
        CheckpointFile(path), p.inst.trust, None, p.inst.db.read(lambda c: read_head(c, path.name))
    )
    assert problems == [] and records[0]["type"] == "reconcile"
    assert records[0]["n"] == len(lines) + 1 and "restart" in records[0]
    guard.tick()
    assert guard.refusal is None
    entry = p.inst.db.read(
        lambda c: c.execute(
            select(AuditEntry.data).where(AuditEntry.action == "institution.reconcile")
        ).all()
    )
    assert any("restart" in json.loads(d) for (d,) in entry)


def test_a_replayed_reconcile_is_refused_by_the_guard_and_restart_keeps_what_verifies(
    populated: Populated,
) -> None:
    p = populated
    path = p.keys.with_name("keys.checkpoints")
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    reconcile(p.inst.db, p.inst.keys, path, note="drill", restore={"reason": "drill"})
    _grow(p)
    guard.tick()
    lines = CheckpointFile(path).lines()
    replay = next(i for i, x in enumerate(lines) if json.loads(x)["type"] == "reconcile")
    _write(path, [*lines, lines[replay]])
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    assert guard.refusal is not None and "chain is broken" in guard.refusal
    with pytest.raises(CheckpointChainBroken, match="chain is broken"):
        reconcile(p.inst.db, p.inst.keys, path, note="no")
    # the operator has no clean copy: restart keeps the old file aside, salvages its records
    # in their signed order (the replayed copy counted once) and chains on past them
    out = reconcile(p.inst.db, p.inst.keys, path, note="chain broken", restart=True)
    assert out["restart"]["records_kept"] == len(lines)
    assert out["restart"]["starts_at"] == len(lines) + 1
    aside = Path(out["restart"]["moved_to"])
    assert aside.read_text().splitlines() == [*lines, lines[replay]]
    guard.tick()
    assert guard.refusal is None


def test_the_audit_reports_a_broken_chain_a_cut_file_and_a_missing_one(
    populated: Populated,
) -> None:
    from safescan.institution.auditing import run_audit
    from safescan.institution.db import normalize_url

    p = populated
    path = p.keys.with_name("keys.checkpoints")
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    _grow(p)
    guard.tick()
    _grow(p)
    guard.tick()
    url = normalize_url(p.db_url)
    assert run_audit(url, checkpoint_file=path, storage_checks=False).ok
    lines = CheckpointFile(path).lines()
    cases = {
        "chain is broken": [lines[0], lines[2], lines[1]],
        "ends at record 2": lines[:2],
        "is missing": None,
    }
    for needle, content in cases.items():
        if content is None:
            path.unlink()
        else:
            _write(path, content)
        report = run_audit(url, checkpoint_file=path, storage_checks=False)
        assert not report.ok and any(needle in x for x in report.problems), (needle, report)
    _write(path, lines)
    assert run_audit(url, checkpoint_file=path, storage_checks=False).ok
