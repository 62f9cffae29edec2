"""The checkpoint file: signed records, forgeries and foreign files refused, torn writes, the
incremental reader, compaction, and serials and revocation sequences that never repeat."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.code.certs import Role, TrustStore
from safescan.code.keys import SigningKey
from safescan.institution.checkpoints import (
    CheckpointError,
    CheckpointFile,
    CheckpointUnavailable,
    Lookup,
    Tail,
    detect,
    essential,
    essential_records,
    high_water,
    parse,
    read_records,
    sign,
)
from safescan.institution.domain.results import CarrierEnrolled
from safescan.institution.reservations import Journal
from safescan.institution.rollback import RollbackGuard
from safescan.institution.service import Institution
from tests.faults.populate import Populated, populated_on
from tests.institution.conftest import BACKENDS
from tests.institution.harness import attest

KEY = SigningKey.generate()


def _x25519() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate().public_key().public_bytes_raw()


def _enroll(inst: Institution, token: str) -> CarrierEnrolled:
    """Enroll a carrier with a genuine (trusted test factory's) attestation."""
    signing, transport = SigningKey.generate().public_key.raw, _x25519()
    statement = attest(inst, token, signing, transport)
    return inst.carriers.enroll(token, signing, transport, statement)


TRUST = TrustStore({1: KEY.public_key})
SEQS = [3] + [0] * 15


def _body(db: str = "D", seqs: list[int] | None = None, at: int = 1) -> dict[str, object]:
    return {
        "type": "checkpoint",
        "db": db,
        "at": at,
        "seqs": seqs or SEQS,
        "digest": "x",
        "marks": {"serial": 5, "crl": 2, "event": 9},
    }


def _checkpoint(db: str = "D", seqs: list[int] | None = None, at: int = 1) -> str:
    """A record as files before the hash chain held them (no ``prev``, no ``n``)."""
    return sign(KEY, 1, _body(db, seqs, at))


def _legacy(f: CheckpointFile, lines: list[str]) -> None:
    """Append lines verbatim, as a release before the chain did (or a forger does)."""
    with f.path.open("a") as raw:
        raw.write("".join(line + "\n" for line in lines))


def test_records_verify_and_every_forgery_is_refused() -> None:
    line = _checkpoint()
    assert parse(line, TRUST)["marks"]["serial"] == 5
    doc = json.loads(line)
    for field, value in (
        ("at", 2),
        ("db", "E"),
        ("seqs", [4] + [0] * 15),
        ("kid", 2),
        ("type", "reconcile"),
        ("v", 2),
    ):
        forged = json.dumps({**doc, field: value})
        with pytest.raises(CheckpointError):
            parse(forged, TRUST)
    other = sign(SigningKey.generate(), 1, {"type": "checkpoint", "db": "D", "at": 1})
    for bad in (other, "not json", "{}", json.dumps({**doc, "sig": "!!"}), line[:-5]):
        with pytest.raises(CheckpointError):
            parse(bad, TRUST)


def test_file_appends_skips_a_torn_last_line_and_reports_foreign_records() -> None:
    with tempfile.TemporaryDirectory() as d:
        f = CheckpointFile(Path(d) / "cp")
        f.append(KEY, 1, [_body(), _body("OTHER")])
        with f.path.open("a") as raw:
            raw.write(_checkpoint(at=3)[:40])  # a crash in the middle of a write
        assert len(f.lines()) == 2
        records, problems = read_records(f, TRUST, "D")
        assert [r["at"] for r in records] == [1]
        assert problems == ["checkpoint file line 2 belongs to another database"]
        assert oct(f.path.stat().st_mode & 0o777) == "0o600"


def test_tail_reads_only_what_was_appended_and_survives_compaction() -> None:
    with tempfile.TemporaryDirectory() as d:
        f = CheckpointFile(Path(d) / "cp")
        tail = Tail(f)
        assert tail.refresh(TRUST, "D") == []
        f.append(KEY, 1, [_body(at=1), _body(at=2)])
        assert [r["at"] for r in tail.refresh(TRUST, "D")] == [2]
        revoke = {
            "type": "revoke",
            "db": "D",
            "at": 3,
            "serials": [4],
            "crl": 3,
            "role": "carrier",
            "subject": "carrier:4",
        }
        issue = [
            {
                "type": "issue",
                "db": "D",
                "at": 4,
                "serial": s,
                "role": "carrier",
                "subject": f"carrier:{s}",
            }
            for s in (7, 9, 8)
        ]
        head = f.append(KEY, 1, [revoke, *issue, _body(at=5)])
        assert head.n == 7
        kept = tail.refresh(TRUST, "D")
        assert [(r["type"], r["at"]) for r in kept] == [
            ("revoke", 3),
            ("issue", 4),
            ("checkpoint", 5),
        ]
        assert high_water(kept) == {"serial": 9, "crl": 3, "event": 9}
        assert not tail.problems
        # a new file, chained on from the old one's last record
        compacted = f.compact(KEY, 1, lambda lines: essential_records(lines, TRUST, "D"))
        assert compacted.n == 10
        f.append(KEY, 1, [_body(at=6)])
        assert [r["at"] for r in tail.refresh(TRUST, "D")] == [3, 4, 6]
        assert not tail.problems
        assert [r["n"] for r in read_records(f, TRUST, "D")[0]] == [8, 9, 10, 11]
        rec = {
            "type": "reconcile",
            "db": "D",
            "at": 7,
            "seqs": SEQS,
            "marks": {"serial": 20, "crl": 5, "event": 10**6},
        }
        f.append(KEY, 1, [rec])
        assert [r["type"] for r in tail.refresh(TRUST, "D")] == ["reconcile"]
        assert high_water([r for r, _ in essential(tail.kept)])["serial"] == 20
        assert read_records(f, TRUST, "D")[1] == [] and not tail.problems


def _lookup(hashes: dict[tuple[int, int], str], revoked: set[int]) -> Lookup:
    return Lookup(
        lambda wanted: {k: hashes[k] for k in wanted if k in hashes},
        lambda serials: (set(serials), revoked & set(serials)),
    )


def test_detect_missing_entries_forks_and_unapplied_revocations() -> None:
    from safescan.institution.checkpoints import heads_digest

    heads = [(3, "h3")] + [(0, "0" * 64)] * 15
    cp = {"type": "checkpoint", "db": "D", "at": 1, "seqs": SEQS, "digest": heads_digest(heads)}
    assert detect([cp], _lookup({(0, 3): "h3"}, set())).rolled_back == []
    missing = detect([cp], _lookup({(0, 2): "h2"}, set())).rolled_back
    assert missing and "lacks audit entries" in missing[0] and "chain 0 entry 3" in missing[0]
    forked = detect([cp], _lookup({(0, 3): "other"}, set())).rolled_back
    assert forked and "differs" in forked[0]
    revoke = {"type": "revoke", "db": "D", "at": 2, "serials": [4, 5], "crl": 3}
    v = detect([cp, revoke], _lookup({(0, 3): "h3"}, {4}))
    assert v.rolled_back == [] and v.unapplied == [5]
    reconciled = {"type": "reconcile", "db": "D", "at": 3, "seqs": [2] + [0] * 15}
    # what the reconciled database holds is compared, not the checkpoints before it
    assert detect([cp, revoke, reconciled], _lookup({(0, 2): "h2"}, set())).rolled_back == []
    # a file cut short right after a reconcile: the reconciled heads must still be there
    cut = detect([cp, revoke, reconciled], _lookup({(0, 1): "h1"}, set())).rolled_back
    assert cut and "reconciliation of" in cut[0] and "chain 0 entry 2" in cut[0]


@pytest.fixture(params=BACKENDS)
def populated(request: pytest.FixtureRequest) -> Iterator[Populated]:
    with populated_on(request, payments=3) as p:
        yield p


def test_serials_and_revocation_sequences_skip_everything_journaled(populated: Populated) -> None:
    p = populated
    f = CheckpointFile(p.keys.with_name("keys.checkpoints"))
    p.inst.journal = Journal(f, p.inst.keys)
    RollbackGuard(p.inst.db, p.inst.keys, f.path).tick()
    token = p.inst.customers.issue_enrollment_token(p.customers[0]).token
    first = _enroll(p.inst, token)
    serial = first.carrier_serial
    # a restored copy's counters are behind: simulate by winding them back
    from sqlalchemy import update

    from safescan.institution.models import Counter

    p.inst.db.write(lambda c: c.execute(update(Counter).values(value=1)))
    token = p.inst.customers.issue_enrollment_token(p.customers[0]).token
    second = _enroll(p.inst, token)
    assert second.carrier_serial == serial + 1
    issued = [r for r in read_records(f, p.inst.trust, None)[0] if r["type"] == "issue"]
    assert [r["serial"] for r in issued] == [serial, serial + 1]
    assert issued[0]["subject"] == f"carrier:{serial}" and issued[0]["role"] == "carrier"
    # the counter was wound back to 1 (crl 2 was checkpointed): the next sequence is 3, not 2
    p.inst.carriers.revoke(serial)
    revokes = [r for r in read_records(f, p.inst.trust, None)[0] if r["type"] == "revoke"]
    assert revokes[-1]["serials"] == [serial] and revokes[-1]["role"] == Role.CARRIER.name.lower()
    assert revokes[-1]["crl"] == 3 and p.inst.certificates.revocation_list().sequence == 3


def test_the_guard_refuses_forged_and_foreign_checkpoint_files(populated: Populated) -> None:
    p = populated
    path = p.keys.with_name("keys.checkpoints")
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    assert guard.refusal is None and guard.error() is None
    lines = path.read_text().splitlines()
    doc = json.loads(lines[-1])
    for forged in ({**doc, "seqs": [0] * 16}, {**doc, "db": "elsewhere"}):
        path.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
        guard = RollbackGuard(p.inst.db, p.inst.keys, path)
        guard.tick()
        assert guard.refusal is not None and "do not verify" in guard.refusal
        err = guard.error()
        assert err is not None and err.code == "database_rolled_back" and err.status == 503
    # another institution's (validly signed) records
    other_key = SigningKey.generate()
    p.inst.keys.extra_roots[7] = other_key.public_key
    p.inst.trust = p.inst.keys.trust_store()
    foreign = sign(
        other_key, 7, {**{k: v for k, v in doc.items() if k not in ("sig", "v", "kid")}, "db": "X"}
    )
    path.write_text("\n".join([*lines, foreign]) + "\n")
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    assert guard.refusal is not None and "another database" in guard.refusal
    path.write_text("\n".join(lines) + "\n")
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    assert guard.refusal is None


@pytest.mark.parametrize(
    ("err", "refused"),
    [
        (errno.EMFILE, False),  # out of descriptors: the process's trouble, no verdict
        (errno.ENFILE, False),
        (errno.ENOMEM, False),
        (errno.EACCES, True),  # the file made unreadable: refused as before
        (errno.EIO, True),
    ],
)
def test_a_checkpoint_file_unreadable_for_want_of_descriptors_is_no_rollback(
    populated: Populated, monkeypatch: pytest.MonkeyPatch, err: int, refused: bool
) -> None:
    p = populated
    path = p.keys.with_name("keys.checkpoints")
    guard = RollbackGuard(p.inst.db, p.inst.keys, path)
    guard.tick()
    p.inst.db.write(lambda c: None)  # the guard reads again on the next tick
    real_stat = os.stat

    def failing_stat(target: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(target) == str(path):
            raise OSError(err, os.strerror(err))
        return real_stat(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", failing_stat)
    if refused:
        guard.check()
        assert guard.refusal is not None and "cannot read the checkpoint file" in guard.refusal
    else:
        with pytest.raises(CheckpointUnavailable):
            guard.tick()
        guard.check()  # logged as a pause: the verdict made before stands
        assert guard.refusal is None and guard.error() is None
    monkeypatch.setattr(os, "stat", real_stat)
    guard.check()  # readable again: serving, either way
    assert guard.refusal is None


def test_a_missing_checkpoint_file_is_started_with_a_warning(
    populated: Populated, caplog: pytest.LogCaptureFixture
) -> None:
    """No file (moved, or never made): the process starts one and says loudly that a restore
    made before now cannot be recognised; a file that is there draws no warning."""
    p = populated
    path = p.keys.with_name("moved.checkpoints")
    assert not path.exists()
    with caplog.at_level("WARNING", logger="safescan.institution.rollback"):
        guard = RollbackGuard(p.inst.db, p.inst.keys, path)
        guard.tick()
        guard.tick()
    warnings = [r.getMessage() for r in caplog.records if "no checkpoint file" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert guard.refusal is None and path.exists()
    caplog.clear()
    with caplog.at_level("WARNING", logger="safescan.institution.rollback"):
        RollbackGuard(p.inst.db, p.inst.keys, path).tick()
    assert not [r for r in caplog.records if "no checkpoint file" in r.getMessage()]
