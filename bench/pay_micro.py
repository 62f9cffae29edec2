"""The payment path's steps, timed one by one in-process (issue 20, part B), for before/after.

    .venv/bin/python bench/pay_micro.py [TREE] [--n 2000] [--json] [--profile FILE]

Imports safescan (and the test harness) from TREE (default: this checkout), so two trees (an
older commit exported somewhere, and this one) can be compared side by side under the same
load: run it alternately on both. Makes a throwaway SQLite institution (``institution init``,
then bench/institution_load.py's orders and carrier-signed authorizations), then prints the CPU
microseconds of each step of ``POST /v1/payments`` below the HTTP layer (CPU time, the least of
10 rounds: this machine is shared and wall time moves with its load):

* ``base45_decode``: the code's text to its binary (``decode_text``);
* ``strict_cbor``: the strict decoder on the code's signed part (``cbor.strict_loads``);
* ``open_code``: the whole opening (Base45, HPKE, strict CBOR, signature, body rules);
* ``authorization_parse``: ``Authorization.from_bytes`` (strict CBOR and field rules);
* ``plan_payment``: the records before the transaction (ids, pseudonym, the signed receipt,
  event payload, audit entry; no idempotency key), ``Payments._plan_payment``;
* ``prepare_payment``: everything before the transaction, ``Payments._prepare_payment``;
* ``pay_group1_cpu`` / ``pay_group1_wall``: ``Payments.pay`` end to end, one payment per group
  commit (each call waits for its commit): the process's CPU (both threads) and wall time;
* ``pay_tx_group16_cpu``: the transactions of prepared payments queued 16 at a time (group
  commits), the process's CPU per payment: the writer's cost per payment in groups;
* ``writer_group1_empty`` / ``writer_group16_empty``: the writer's own cost of one group
  commit of 1 and of 16 writes that do nothing (connection, BEGIN IMMEDIATE, a SAVEPOINT and
  RELEASE per write, COMMIT, the callers' futures), run in this thread: its plumbing alone;
* ``crypto_cpu``: the cryptography one payment does, alone (bench/institution_load.py's
  ``crypto_bound`` loop, this thread's CPU per payment), for reference.

Every payment is a real one (each consumes a precreated order); the audit runs at the end and
must pass. The heap made during set-up is frozen first (``gc.freeze()``), as ``institution
serve`` does after start-up. ``--profile FILE`` also writes a cProfile of 2,000
``_prepare_payment`` calls.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
ap.add_argument("tree", nargs="?", default=None)
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--json", action="store_true")
ap.add_argument("--profile", default=None)
ARGS = ap.parse_args()
TREE = Path(ARGS.tree).resolve() if ARGS.tree else Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TREE / "src"), str(TREE)]
os.environ["PYTHONPATH"] = os.pathsep.join([str(TREE / "src"), str(TREE)])

from tests.institution.harness import PASSPHRASE, env, init_db  # noqa: E402
from tests.institution.loadprep import make_payables  # noqa: E402

import safescan  # noqa: E402
from safescan.code import cbor, decode_text, envelope  # noqa: E402
from safescan.code.authorization import Authorization  # noqa: E402
from safescan.institution.db import Database  # noqa: E402
from safescan.institution.keystore import KeyStore  # noqa: E402
from safescan.institution.service import Institution  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from institution_load import crypto_bound  # noqa: E402


def cpu_us(fn: Callable[[], object], n: int) -> float:
    """CPU time of one call of ``fn`` in microseconds: the least over 10 rounds of ``n // 10``
    calls of this thread's CPU time per call (after 100 warm-up calls). CPU time, and the
    least of several rounds, because this machine is shared: wall time moves with its load."""
    for _ in range(100):
        fn()
    rounds, best = 10, float("inf")
    per = max(n // rounds, 1)
    for _ in range(rounds):
        t = time.thread_time()
        for _ in range(per):
            fn()
        best = min(best, (time.thread_time() - t) / per)
    return round(best * 1e6, 1)


def main() -> None:
    """Print the figures (one JSON object with ``--json``)."""
    assert safescan.__file__ and safescan.__file__.startswith(str(TREE)), safescan.__file__
    n = ARGS.n
    with tempfile.TemporaryDirectory(prefix="safescan-paymicro-") as d:
        db_url = f"sqlite:///{Path(d) / 'bench.db'}"
        keys = Path(d) / "keys"
        init_db(db_url, keys)
        inst = Institution(Database(db_url), KeyStore(keys).load(PASSPHRASE.encode()))
        per_client = 2 * n + 8 * 80 + 400
        payables = make_payables(inst, 1, per_client, 2)[0]
        gc.collect()  # as `institution serve` does after start-up (server.settle_heap)
        gc.freeze()
        first = payables[0]
        code, auth_bytes = first.code, first.authorization.to_bytes()
        now = inst.now()
        binary = decode_text(code)
        header = binary[: envelope.HEADER_BYTES]
        key = inst.scheme_keys.for_opening(header[2], now).private_key()
        plain = envelope._SUITE.decrypt(
            binary[envelope.HEADER_BYTES :], key, info=envelope.HPKE_INFO + header
        )
        signed = plain[envelope.SIGNATURE_BYTES :]
        payments = inst.payments
        opened = envelope.open_code(code, inst.scheme_keys, inst.trust, now=now)
        auth = Authorization.from_bytes(auth_bytes)
        _, cid = payments.carriers.key(auth.carrier_serial)
        figures: dict[str, float] = {
            "base45_decode_us": cpu_us(lambda: decode_text(code), n),
            "strict_cbor_us": cpu_us(lambda: cbor.strict_loads(signed), n),
            "open_code_us": cpu_us(
                lambda: envelope.open_code(code, inst.scheme_keys, inst.trust, now=now), n
            ),
            "authorization_parse_us": cpu_us(lambda: Authorization.from_bytes(auth_bytes), n),
            "plan_payment_us": cpu_us(
                lambda: payments._plan_payment(opened, auth, cid, None, now), n
            ),
            "prepare_payment_us": cpu_us(
                lambda: payments._prepare_payment(code, auth_bytes, None), n
            ),
        }
        if ARGS.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(2000):
                payments._prepare_payment(code, auth_bytes, None)
            prof.disable()
            prof.dump_stats(ARGS.profile)
        todo = iter(payables[1:])
        for _ in range(50):  # warm-up payments
            p = next(todo)
            payments.pay(p.code, p.authorization.to_bytes(), None)
        # end to end, one payment per group: process CPU (this thread and the writer's) and
        # the wall time per payment, over the least-loaded of 10 rounds
        rounds, per = 10, max(n // 10, 1)
        best_cpu = best_wall = float("inf")
        for _ in range(rounds):
            batch = [(p.code, p.authorization.to_bytes()) for p in itertools.islice(todo, per)]
            c, w = time.process_time(), time.perf_counter()
            for code_, auth_ in batch:
                payments.pay(code_, auth_, None)
            best_cpu = min(best_cpu, (time.process_time() - c) / per)
            best_wall = min(best_wall, (time.perf_counter() - w) / per)
        figures["pay_group1_cpu_us"] = round(best_cpu * 1e6, 1)
        figures["pay_group1_wall_us"] = round(best_wall * 1e6, 1)
        best_cpu = float("inf")
        for _ in range(8):  # 5 groups of 16 per round
            plans = []
            for p in itertools.islice(todo, 80):
                stored, plan = payments._prepare_payment(p.code, p.authorization.to_bytes(), None)
                assert stored is None and plan is not None
                plans.append(plan)
            works = [payments._payment_tx(plan) for plan in plans]
            c = time.process_time()
            for i in range(0, 80, 16):
                futs = [inst.db.submit(w) for w in works[i : i + 16]]
                for f in futs:
                    f.result()
            best_cpu = min(best_cpu, (time.process_time() - c) / 80)
        figures["pay_tx_group16_cpu_us"] = round(best_cpu * 1e6, 1)
        committer = inst.db._writer()

        def group(size: int) -> None:  # one group of no-op writes, run in this thread
            batch = [(lambda conn: None, Future(), 0.0) for _ in range(size)]
            committer._run_batch(batch)  # type: ignore[arg-type]

        figures["writer_group1_empty_us"] = cpu_us(lambda: group(1), 2000)
        figures["writer_group16_empty_us"] = cpu_us(lambda: group(16), 1000)
        best_cpu = float("inf")
        for _ in range(3):
            c = time.thread_time()
            crypto_bound(inst, first.code, first.authorization, first.carrier_key, cid)
            best_cpu = min(best_cpu, (time.thread_time() - c) / 2000)  # its 2,000 payments
        figures["crypto_cpu_us"] = round(best_cpu * 1e6, 1)
        inst.db.dispose()
        audit = subprocess.run(
            [sys.executable, "-m", "safescan.institution", "audit", "--db", db_url],
            env=env(),
            capture_output=True,
            text=True,
        )
        if audit.returncode != 0:
            raise SystemExit(f"the audit failed:\n{audit.stdout[-2000:]}{audit.stderr[-2000:]}")
    load = os.getloadavg()[0]
    if ARGS.json:
        print(json.dumps({"tree": str(TREE), "load1": round(load, 2), **figures}))
        return
    for name, value in figures.items():
        print(f"{name:26} {value:9.1f} us")
    print(f"load average (1 min) at the end: {load:.2f}; tree {TREE}; audit passed")


if __name__ == "__main__":
    main()
