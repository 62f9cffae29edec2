"""Shared machinery of the fuzz harnesses: the atheris entry point and a bounded campaign.

Every harness module defines ``TestOneInput(data: bytes) -> None`` (raise = crash), ``seeds()``
(real samples, already in the harness's input layout), ``TOKENS`` (a small mutation dictionary)
and ``OUTCOMES`` (a counter of how each input ended, so a test can check the campaign reached
deep into the parser). The same module is

- an atheris fuzzer: ``python fuzz/fuzz_X.py -atheris_runs=N`` or ``-max_total_time=S`` (any
  libFuzzer flag works; corpus directories may follow, the seeds are always added);
- importable: :func:`campaign` drives ``TestOneInput`` with a seeded, bounded mutational
  random-bytes campaign (the pytest suite does this; it also runs when atheris is missing).

A crash is any exception that is not a :class:`safescan.code.errors.SafescanError` (harnesses
catch those and count them), plus each harness's own property assertions.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _entry in (ROOT, ROOT / "src"):  # the package (if not installed) and ``fuzz`` itself
    if str(_entry) not in sys.path:
        sys.path.insert(0, str(_entry))

from safescan.code.errors import SafescanError  # noqa: E402

TestFn = Callable[[bytes], None]

_INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x01\x00\x00",
    b"\xff\xff\xff\xff",
)


def count(outcomes: Counter[str], exc: SafescanError | None) -> None:
    """Record one expected outcome: ``"ok"`` or the typed error's class name."""
    outcomes["ok" if exc is None else type(exc).__name__] += 1


def mutate(
    data: bytes, rng: random.Random, pool: Sequence[bytes], tokens: Sequence[bytes]
) -> bytes:
    """One to four random libFuzzer-style edits of ``data`` (bytes, tokens, crossover)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set a byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            at = rng.randint(0, n)
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and n:  # delete a range
            at = rng.randrange(n)
            del buf[at : at + rng.randint(1, 16)]
        elif op == 4 and n:  # duplicate a range
            at = rng.randrange(n)
            chunk = buf[at : at + rng.randint(1, 32)]
            to = rng.randint(0, n)
            buf[to:to] = chunk
        elif op == 5 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 6:  # an interesting value, overwritten or inserted
            value = rng.choice(_INTERESTING)
            at = rng.randint(0, n)
            buf[at : at + (len(value) if rng.random() < 0.5 else 0)] = value
        elif op == 7 and tokens:  # a dictionary token
            at = rng.randint(0, n)
            buf[at:at] = rng.choice(tokens)
        elif op == 8 and pool:  # crossover with another seed
            other = rng.choice(pool)
            cut_a, cut_b = rng.randint(0, n), rng.randint(0, len(other))
            buf = buf[:cut_a] + bytearray(other[cut_b:])
        elif n:  # arithmetic on a byte
            at = rng.randrange(n)
            buf[at] = (buf[at] + rng.choice((-1, 1, -16, 16, 35))) % 256
    return bytes(buf[:4096])


@dataclass
class Campaign:
    """Figures of one bounded campaign."""

    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def per_second(self) -> float:
        """Inputs tried per second."""
        return self.inputs / self.seconds if self.seconds else 0.0


def campaign(
    test: TestFn,
    seeds: Sequence[bytes],
    *,
    runs: int,
    max_seconds: float | None = None,
    seed: int = 0,
    tokens: Sequence[bytes] = (),
    outcomes: Counter[str] | None = None,
) -> Campaign:
    """Run ``test`` on every seed, then on ``runs`` generated inputs (80 % mutated seeds, 20 %
    random bytes), stopping early after ``max_seconds``. Exceptions propagate: a crash fails the
    caller with the input attached (``exc.fuzz_input``)."""
    rng = random.Random(seed)
    pool = list(seeds)
    before = Counter(outcomes) if outcomes is not None else Counter()
    result = Campaign()
    start = time.perf_counter()
    deadline = start + max_seconds if max_seconds is not None else float("inf")
    for i in range(len(pool) + runs):
        if i < len(pool):
            data = pool[i]
        elif pool and rng.random() < 0.8:
            data = mutate(rng.choice(pool), rng, pool, tokens)
        else:
            data = rng.randbytes(rng.randint(0, 300))
        try:
            test(data)
        except BaseException as exc:
            exc.fuzz_input = data  # type: ignore[attr-defined]
            exc.add_note(f"fuzz input ({len(data)} bytes, hex): {data.hex()}")
            raise
        result.inputs += 1
        if result.inputs % 64 == 0 and time.perf_counter() > deadline:
            break
    result.seconds = time.perf_counter() - start
    if outcomes is not None:
        result.outcomes = outcomes - before
    return result


def _flag(argv: Sequence[str], name: str) -> str | None:
    for arg in argv:
        match = re.fullmatch(rf"-{name}=(.*)", arg)
        if match:
            return match.group(1)
    return None


def write_seeds(seeds: Sequence[bytes], directory: Path) -> None:
    """Write the seed corpus as libFuzzer files (``seed-NNNN``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds):
        (directory / f"seed-{i:04d}").write_bytes(data)


def main(
    test: TestFn,
    seeds: Sequence[bytes],
    tokens: Sequence[bytes],
    outcomes: Counter[str],
    argv: list[str] | None = None,
) -> None:
    """Fuzz ``test`` with atheris (libFuzzer flags in ``argv``), or the built-in campaign if
    atheris is not installed. The seeds go in a temporary corpus directory."""
    argv = list(sys.argv if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="safescan-fuzz-seeds-") as tmp:
        seed_dir = Path(tmp) / "seeds"
        write_seeds(seeds, seed_dir)
        try:
            import atheris  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            print("atheris is not installed: running the built-in mutational campaign", flush=True)
            _fallback(test, seeds, tokens, outcomes, argv)
            return
        dirs = [a for a in argv[1:] if not a.startswith("-")]
        flags = [a for a in argv[1:] if a.startswith("-")]
        # The first corpus directory receives new inputs; keep the seeds read-only after it.
        if not dirs:
            dirs = [str(Path(tmp) / "corpus")]
            os.mkdir(dirs[0])
        dict_path = Path(tmp) / "tokens.dict"
        dict_path.write_text("".join(f'"{_escape(t)}"\n' for t in tokens))
        extra = [] if _flag(flags, "dict") is not None or not tokens else [f"-dict={dict_path}"]
        atexit.register(_print_outcomes, outcomes)
        atheris.instrument_all()
        inputs = [*dirs, str(seed_dir)]
        if any(Path(d).is_file() for d in dirs):  # replaying crash files: run just those
            inputs = dirs
        atheris.Setup([argv[0], *flags, *extra, *inputs], test)
        atheris.Fuzz()


def _print_outcomes(outcomes: Counter[str]) -> None:
    print("outcomes (how the inputs ended):", file=sys.stderr)
    for name, n in outcomes.most_common():
        print(f"  {n:10d}  {name}", file=sys.stderr)


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token)


def _fallback(
    test: TestFn,
    seeds: Sequence[bytes],
    tokens: Sequence[bytes],
    outcomes: Counter[str],
    argv: Sequence[str],
) -> None:
    runs = int(_flag(argv, "atheris_runs") or _flag(argv, "runs") or 100_000)
    total = _flag(argv, "max_total_time")
    seed = int(_flag(argv, "seed") or 0)
    result = campaign(
        test,
        seeds,
        runs=runs,
        max_seconds=float(total) if total else None,
        seed=seed,
        tokens=tokens,
        outcomes=outcomes,
    )
    print(
        f"done: {result.inputs} inputs in {result.seconds:.1f} s ({result.per_second:.0f}/s), "
        "0 crashes"
    )
    for name, n in result.outcomes.most_common():
        print(f"  {n:8d}  {name}")
