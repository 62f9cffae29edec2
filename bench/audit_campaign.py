"""Corruption campaigns against `safescan institution audit`: how much does it catch?

    python bench/audit_campaign.py [--flips 230] [--multi 20] [--values 1] [--pg] [--json]
                                   [--audit-src DIR] [--seed N] [--jobs 2]

Builds a populated institution (every table holds rows: tests/faults/populate.py) and runs the
audit command as an operator would (a subprocess, ``--json``) after each corruption:

1. **Byte flips** (SQLite): for each flip, a fresh copy of the database file gets one byte XORed
   with a random non-zero mask, in a page of one table (tables in turn, so each gets its share;
   a page of its b-tree or of one of its indexes, at an offset inside the page's used part). A
   flip is *effective* when it changed a stored value or broke SQLite's own integrity_check
   (otherwise it hit a byte SQLite does not use, e.g. a freed cell's leftovers: nothing to
   detect), and *visible by design* when effective and not confined to the columns the audit
   cannot see (tests/faults/corruptions.py, UNDETECTABLE).
2. **Multiple corruptions**: ``--multi`` copies with 2-6 flips each.
3. **Value corruptions** (``--values N``: N per column of every table; SQLite, and PostgreSQL
   with ``--pg``): one stored value changed by SQL, immutability triggers bypassed, audited,
   undone.

A *crash* is an exit code other than 0 and 1 or a traceback. ``--audit-src`` runs the audit of
another source tree (e.g. a checkout of an older commit's ``src``) on the same corruptions: the
"before" figure. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faults import flips  # noqa: E402
from tests.faults.corruptions import UNDETECTABLE, campaign, plan  # noqa: E402
from tests.faults.populate import populate  # noqa: E402
from tests.institution.harness import env  # noqa: E402

from safescan.institution.db import Database  # noqa: E402


def run_audit(url: str, src: str | None) -> dict[str, Any]:
    """The audit command's verdict on ``url`` (with another tree's code if ``src``)."""
    e = env()
    if src:
        e["PYTHONPATH"] = src
    out = subprocess.run(
        [sys.executable, "-m", "safescan.institution", "audit", "--db", url, "--json"],
        env=e,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        problems = list(json.loads(out.stdout.strip().splitlines()[-1]).get("problems", []))
    except (ValueError, IndexError, AttributeError):
        problems = []
    crashed = out.returncode not in (0, 1) or "Traceback" in out.stderr
    return {
        "detected": out.returncode == 1 and bool(problems),
        "crashed": crashed,
        "sample": problems[:2],
        "stderr": out.stderr[-400:] if crashed else "",
    }


def flip_campaign(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    template = work / "template.db"
    populate(f"sqlite:///{template}", work / "keys", payments=args.payments).close()
    size = flips.page_size(template)
    pages = flips.table_pages(template)
    clean = flips.cells(template)
    assert clean is not None
    names = {t: flips.columns(template, t) for t in clean}
    baseline = run_audit(f"sqlite:///{template}", args.audit_src)
    tables = sorted(pages)
    rng = random.Random(args.seed)
    cases = [(i, [tables[i % len(tables)]]) for i in range(args.flips)]
    cases += [
        (args.flips + j, [rng.choice(tables) for _ in range(rng.randint(2, 6))])
        for j in range(args.multi)
    ]

    def one(case: tuple[int, list[str]]) -> dict[str, Any]:
        i, targets = case
        crng = random.Random(args.seed * 1_000_003 + i)
        db = work / f"case{i}.db"
        shutil.copy(template, db)
        spots = [(t, *flips.flip(db, pages[t], crng, size)) for t in targets]
        what = flips.changed(clean, flips.cells(db), names)
        broken = not flips.integrity_ok(db)
        verdict = run_audit(f"sqlite:///{db}", args.audit_src)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        effective = broken or what is None or bool(what)
        hidden = not broken and what is not None and bool(what) and what <= set(UNDETECTABLE)
        return {
            "multi": len(targets) > 1 or i >= args.flips,
            "table": targets[0],
            "spots": spots,
            "effective": effective,
            "visible": effective and not hidden,
            "changed": None if what is None else sorted(what),
            **verdict,
        }

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, cases))
    single = [r for r in results if not r["multi"]]
    multi = [r for r in results if r["multi"]]
    per_table: dict[str, dict[str, int]] = {}
    for r in single:
        t = per_table.setdefault(r["table"], dict.fromkeys(("flips", "effective", "detected"), 0))
        t["flips"] += 1
        t["effective"] += r["effective"]
        t["detected"] += r["detected"]

    def rate(rows: list[dict[str, Any]]) -> float:
        return round(sum(r["detected"] for r in rows) / max(1, len(rows)), 4)

    eff = [r for r in single if r["effective"]]
    vis = [r for r in single if r["visible"]]
    return {
        "clean_database_passes": not baseline["detected"] and not baseline["crashed"],
        "tables": len(tables),
        "flips": len(single),
        "detected": sum(r["detected"] for r in single),
        "detection_rate": rate(single),
        "effective": len(eff),
        "detection_rate_effective": rate(eff),
        "visible_by_design": len(vis),
        "detection_rate_visible": rate(vis),
        "crashes": sum(r["crashed"] for r in single),
        "multi_runs": len(multi),
        "multi_detected": sum(r["detected"] for r in multi),
        "multi_crashes": sum(r["crashed"] for r in multi),
        "per_table": per_table,
        "missed_effective": [
            {"table": r["table"], "spot": r["spots"][0][1:], "changed": r["changed"]}
            for r in eff
            if not r["detected"]
        ],
        "crash_samples": [r["stderr"] for r in results if r["crashed"]][:3],
    }


def value_campaign(args: argparse.Namespace, work: Path, url: str) -> dict[str, Any]:
    p = populate(url, work / f"keys-{url.split(':')[0]}", payments=args.payments)
    p.close()
    db = Database(url)
    try:
        corruptions = plan(db, per_column=args.values, seed=args.seed)
        rows = [
            (c, verdict)
            for c, verdict in campaign(db, corruptions, lambda: run_audit(url, args.audit_src))
        ]
    finally:
        db.dispose()
    applied = [(c, v) for c, v in rows if v is not None]
    visible = [(c, v) for c, v in applied if not c.known_undetectable]

    def rate(items: list[Any]) -> float:
        return round(sum(v["detected"] for _, v in items) / max(1, len(items)), 4)

    return {
        "planned": len(rows),
        "refused_by_the_database": len(rows) - len(applied),
        "applied": len(applied),
        "tables": len({c.table for c, _ in applied}),
        "detected": sum(v["detected"] for _, v in applied),
        "detection_rate": rate(applied),
        "visible_by_design": len(visible),
        "detection_rate_visible": rate(visible),
        "crashes": sum(v["crashed"] for _, v in applied),
        "missed": [str(c) for c, v in visible if not v["detected"]][:40],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--flips", type=int, default=230)
    ap.add_argument("--multi", type=int, default=20, help="runs with 2-6 flips each")
    ap.add_argument("--values", type=int, default=0, help="value corruptions per column")
    ap.add_argument("--pg", action="store_true", help="value corruptions on PostgreSQL too")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--payments", type=int, default=12)
    ap.add_argument("--audit-src", help="PYTHONPATH of the audit to measure (default: this tree)")
    ap.add_argument("--json", action="store_true", help="compact JSON")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safescan-campaign-"))
    started = time.monotonic()
    report: dict[str, Any] = {"seed": args.seed, "audit_src": args.audit_src or "this tree"}
    try:
        if args.flips or args.multi:
            report["sqlite_byte_flips"] = flip_campaign(args, work)
        if args.values:
            report["sqlite_values"] = value_campaign(args, work, f"sqlite:///{work / 'v.db'}")
        if args.values and args.pg:
            from tests.institution.pg import cluster_running

            with cluster_running() as cluster:
                report["postgresql_values"] = value_campaign(args, work, cluster.create_database())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=None if args.json else 2, default=_jsonable))


def _jsonable(value: object) -> object:
    """Sets and tuples as sorted lists (the report never fails to print)."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
