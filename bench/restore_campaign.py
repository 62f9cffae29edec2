"""Restored backups against `safescan institution audit`: is an older copy recognised?

    python bench/restore_campaign.py [--trials 12] [--audit-src DIR] [--seed N] [--json]

Builds a populated SQLite institution (tests/faults/populate.py) whose key directory is
``<db>.keys``, so the audit finds the checkpoint file at its default place, and writes its first
checkpoint. Each trial: a fresh copy of database and checkpoint file; an online backup
(``sqlite3`` backup API); then 1-4 acknowledged changes chosen at random (a payment, a refund, a
carrier enrolled, a carrier revoked), each followed by a checkpoint, as a serving process writes
them; then the backup is restored over the database and the audit command runs as an operator
runs it (a subprocess, ``--json``). *Detected* is exit 1 with at least one problem.

With this tree's code each trial also enrolls a carrier on the restored database (serials
reserved through the checkpoint file, as the API server does) and counts a *serial reused*
when it receives the serial of a certificate issued after the backup. ``--audit-src`` runs
another tree's audit on the same restores (the "before" figure; the serial check is skipped:
it needs this tree's service). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faults.populate import Populated, _enroll, order, pay, populate  # noqa: E402
from tests.institution.harness import PASSPHRASE  # noqa: E402

from audit_campaign import run_audit  # noqa: E402
from safescan.institution.checkpoints import CheckpointFile, default_path  # noqa: E402
from safescan.institution.db import Database  # noqa: E402
from safescan.institution.keystore import KeyStore  # noqa: E402
from safescan.institution.reservations import Journal  # noqa: E402
from safescan.institution.rollback import RollbackGuard  # noqa: E402
from safescan.institution.service import Institution  # noqa: E402


def _backup(src: Path, dst: Path) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _open(db: Path, template: Populated) -> Populated:
    """The populated institution's bookkeeping, on another copy of its database."""
    keys = Path(f"{db}.keys")
    inst = Institution(
        Database(f"sqlite:///{db}"),
        KeyStore(keys).load(PASSPHRASE.encode()),
        clock=template.clock,
    )
    inst.webhook_targets = template.inst.webhook_targets
    inst.journal = Journal(CheckpointFile(default_path(keys)), inst.keys)
    p = Populated(f"sqlite:///{db}", keys, inst, template.clock)
    p.merchants, p.customers = list(template.merchants), list(template.customers)
    p.carriers, p.counters = list(template.carriers), dict(template.counters)
    p.merchant_keys = dict(template.merchant_keys)
    return p


def _changes(p: Populated, rng: random.Random) -> tuple[list[str], list[int]]:
    """1-4 acknowledged changes; returns their names and the serials issued."""
    m0 = p.merchants[0]
    done: list[str] = []
    serials: list[int] = []
    actions: dict[str, Callable[[], None]] = {}

    def payment() -> None:
        o = order(p, m0, rng.randint(100, 900))
        pay(p, 0, o["code"], o["total"])

    def refund() -> None:
        o = order(p, m0, 500)
        pay(p, 1, o["code"], o["total"])
        p.inst.refunds.refund(m0, o["order_id"], amount=200, reason=None, idempotency_key=None)

    def enroll() -> None:
        _enroll(p, p.customers[1])
        serials.append(p.carriers[-1][0])

    def revoke() -> None:
        _enroll(p, p.customers[2])
        serials.append(p.carriers[-1][0])
        p.inst.carriers.revoke(p.carriers[-1][0])

    actions.update(payment=payment, refund=refund, enroll=enroll, revoke=revoke)
    guard = RollbackGuard(p.inst.db, p.inst.keys, default_path(p.keys))
    for name in rng.sample(sorted(actions), rng.randint(1, 4)):
        actions[name]()
        guard.tick()  # the serving process's next checkpoint
        done.append(name)
    return done, serials


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--payments", type=int, default=6)
    ap.add_argument("--audit-src", help="PYTHONPATH of the audit to measure (default: this tree)")
    ap.add_argument("--json", action="store_true", help="compact JSON")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safescan-restores-"))
    started = time.monotonic()
    rng = random.Random(args.seed)
    trials: list[dict[str, Any]] = []
    try:
        template_db = work / "template.db"
        keys = Path(f"{template_db}.keys")
        template = populate(f"sqlite:///{template_db}", keys, payments=args.payments)
        RollbackGuard(template.inst.db, template.inst.keys, default_path(keys)).tick()
        template.close()
        clean = run_audit(f"sqlite:///{template_db}", args.audit_src)
        for i in range(args.trials):
            db = work / f"trial{i}.db"
            _backup(template_db, db)
            shutil.copytree(keys, Path(f"{db}.keys"))
            shutil.copy(default_path(keys), default_path(Path(f"{db}.keys")))
            backup = work / f"trial{i}.bak"
            p = _open(db, template)
            try:
                _backup(db, backup)
                done, lost_serials = _changes(p, rng)
            finally:
                p.close()
            for suffix in ("-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            shutil.copy(backup, db)
            verdict = run_audit(f"sqlite:///{db}", args.audit_src)
            reused = None
            if not args.audit_src:
                p = _open(db, template)
                try:
                    _enroll(p, p.customers[1])
                    reused = p.carriers[-1][0] in lost_serials
                finally:
                    p.close()
            trials.append({"changes": done, "lost_serials": lost_serials, "reused": reused,
                           **verdict})  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with_serials = [t for t in trials if t["lost_serials"]]
    report = {
        "seed": args.seed,
        "audit_src": args.audit_src or "this tree",
        "clean_database_passes": not clean["detected"] and not clean["crashed"],
        "trials": len(trials),
        "detected": sum(t["detected"] for t in trials),
        "crashes": sum(t["crashed"] for t in trials),
        "trials_with_lost_serials": len(with_serials),
        "serials_reused": None if args.audit_src else sum(bool(t["reused"]) for t in with_serials),
        "missed": [t["changes"] for t in trials if not t["detected"]],
        "sample": trials[0]["sample"] if trials else [],
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
