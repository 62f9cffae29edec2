"""Replay protection of signed merchant requests across wall-clock jumps.

In process, with both clocks injected (the wall clock and the monotonic clock of each "API
process"), on SQLite and PostgreSQL: forward jumps of several sizes then a correction, backward
jumps, a frozen wall clock, two API processes sharing the elapsed clock, a restart (the
monotonic clock starts again) on a wrong wall clock; after each, every captured request is
replayed and must be refused. Timestamps outside the window are refused on both sides, and the
signature covers the Idempotency-Key (added, removed, changed: refused).

Then on a real server whose wall clock is moved under it with libfaketime: signed refunds are
captured, the clock jumps (forward an hour, back an hour) while the maintenance sweep runs, the
clock is corrected, and the captured requests are replayed as captured, without their key and
with another key: no refund is applied twice.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from safescan.api.errors import ReplayedRequest, Unauthenticated
from safescan.api.merchant_auth import TOLERANCE, sign_request
from safescan.code import SigningKey
from safescan.institution.db import Database
from safescan.institution.keystore import KeyStore
from safescan.institution.models import ElapsedClockRow, NonceFloor, RequestNonce
from safescan.institution.nonces import ELAPSED_COUNTER as ELAPSED
from safescan.institution.nonces import RETENTION
from safescan.institution.service import Institution
from tests.faults.common import order
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import PASSPHRASE, ServerProcess, World, init_db

T0 = 1_800_000_000  # the wall clock's true time at the start of each test
PATH = "/v1/merchant"


@dataclass
class Clocks:
    """The true time, the server's wall clock (which can jump) and the monotonic clocks of
    API processes (which cannot: they follow the true time from their own origin)."""

    true: float = 0.0
    wall_offset: float = 0.0

    def wall(self) -> float:
        return T0 + self.true + self.wall_offset

    def monotonic(self, origin: float) -> Callable[[], float]:
        return lambda: origin + self.true

    def advance(self, seconds: float) -> None:
        self.true += seconds

    def jump(self, seconds: float) -> None:
        self.wall_offset += seconds


@dataclass
class Deployment:
    url: str
    keys: Any
    made: list[Institution] = field(default_factory=list)

    def process(self, clocks: Clocks, origin: float = 1000.0) -> Institution:
        """One API process: its own Database and monotonic origin, the shared wall clock."""
        inst = Institution(
            Database(self.url), self.keys, clock=clocks.wall, monotonic=clocks.monotonic(origin)
        )
        inst.merchant_rate = (0.0, 0.0)
        self.made.append(inst)
        return inst


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    with tempfile.TemporaryDirectory(prefix="safescan-clock-") as d:
        url = make_db(request.param, request, Path(d))
        init_db(url, Path(d) / "keys")
        dep = Deployment(url, KeyStore(Path(d) / "keys").load(PASSPHRASE.encode()))
        try:
            yield dep
        finally:
            for inst in dep.made:
                inst.db.dispose()


@dataclass
class Merchant:
    mid: str
    key: SigningKey

    def sign(self, ts: float, body: bytes = b"", idem: str | None = None) -> dict[str, str]:
        return sign_request(
            self.key, self.mid, "GET", PATH, body, timestamp=int(ts), idempotency_key=idem
        )


def new_merchant(inst: Institution) -> Merchant:
    key = SigningKey.generate()
    m = inst.merchants.create(
        name="Clock Shop",
        city="Berlin",
        country="DE",
        mcc=5814,
        settlement_account="DE89370400440532013000",
        api_public_key=key.public_key.raw,
        webhook_url=None,
    )
    return Merchant(m.merchant.id, key)


def accepted(inst: Institution, headers: dict[str, str], body: bytes = b"") -> bool:
    """Whether the institution accepts this request (a refusal must be a replay refusal)."""
    try:
        inst.access.authenticate_merchant("GET", PATH, headers, body)
    except ReplayedRequest:
        return False
    return True


def sweep(inst: Institution, clocks: Clocks, seconds: float, step: float = 30.0) -> int:
    """Let ``seconds`` of true time pass with a maintenance sweep every ``step``."""
    forgotten = 0
    while seconds > 0:
        clocks.advance(min(step, seconds))
        seconds -= step
        forgotten += inst.access.purge_nonces()
    return forgotten


def nonce_count(inst: Institution, mid: str) -> int:
    return len(
        inst.db.read(
            lambda c: c.execute(
                select(RequestNonce.nonce).where(RequestNonce.merchant_id == mid)
            ).all()
        )
    )


@pytest.mark.parametrize("jump", [RETENTION + 1, 3600, 86400, 10 * 365 * 86400])
def test_a_forward_jump_then_a_correction_reopens_no_replay(
    deployment: Deployment, jump: int
) -> None:
    clocks = Clocks()
    inst = deployment.process(clocks)
    m = new_merchant(inst)
    captured = [m.sign(clocks.wall() + d) for d in (-TOLERANCE, -10, 0, 10, TOLERANCE)]
    assert all(accepted(inst, h) for h in captured)
    clocks.jump(jump)  # the server's clock leaps ahead; sweeps run on it
    assert sweep(inst, clocks, 120) == 0, "a jump of the wall clock forgot nonces"
    assert nonce_count(inst, m.mid) == len(captured)
    clocks.jump(-jump)  # corrected
    replays = [h for h in captured if accepted(inst, h)]
    assert replays == []
    # and whatever time passes afterwards (sweeps and all), none is ever accepted again
    for _ in range(8):
        sweep(inst, clocks, RETENTION / 4)
        assert not any(accepted(inst, h) for h in captured)
    assert nonce_count(inst, m.mid) == 0  # forgotten in the end, on the elapsed clock


@pytest.mark.parametrize("back", [600, 3600, 86400])
def test_a_backward_jump_after_the_nonces_are_forgotten_reopens_no_replay(
    deployment: Deployment, back: int
) -> None:
    clocks = Clocks()
    inst = deployment.process(clocks)
    m = new_merchant(inst)
    captured = [m.sign(clocks.wall() + d) for d in (-100, 0, 100)]
    assert all(accepted(inst, h) for h in captured)
    clocks.jump(-back)  # the server's clock is set back ...
    assert sweep(inst, clocks, RETENTION + 120) >= len(captured)  # ... long enough to forget
    assert nonce_count(inst, m.mid) == 0
    clocks.wall_offset = -(clocks.true)  # ... then to exactly the captured requests' time
    assert abs(clocks.wall() - T0) < 1
    assert not any(accepted(inst, h) for h in captured)  # the floor refuses them
    floor = inst.db.read(
        lambda c: c.execute(select(NonceFloor.ts).where(NonceFloor.merchant_id == m.mid)).scalar()
    )
    assert floor == T0 + 100
    # a fresh request signed now is accepted (the floor is not a denial of service)
    clocks.wall_offset = 0
    assert accepted(inst, m.sign(clocks.wall()))


def test_a_frozen_wall_clock_reopens_no_replay(deployment: Deployment) -> None:
    clocks = Clocks()
    inst = deployment.process(clocks)
    m = new_merchant(inst)
    captured = m.sign(clocks.wall())
    assert accepted(inst, captured)
    for _ in range(30):  # the wall clock stands still while real time passes
        sweep(inst, clocks, 60)
        clocks.jump(-60)
        assert clocks.wall() == T0
        assert not accepted(inst, captured)
    assert nonce_count(inst, m.mid) == 0


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (0, True),
        (-TOLERANCE, True),
        (TOLERANCE, True),
        (-TOLERANCE - 1, False),
        (TOLERANCE + 1, False),
        (-10 * TOLERANCE, False),
        (10 * TOLERANCE, False),
        (-(10**9), False),
        (10**9, False),
    ],
)
def test_timestamps_are_refused_outside_the_window_on_both_sides(
    deployment: Deployment, offset: int, ok: bool
) -> None:
    clocks = Clocks()
    inst = deployment.process(clocks)
    m = new_merchant(inst)
    h = m.sign(max(0, clocks.wall() + offset))
    assert accepted(inst, h) is ok
    clocks.jump(3600)  # on a jumped server clock the window moves with it
    h2 = m.sign(max(0, clocks.wall() + offset))
    assert accepted(inst, h2) is ok


def test_two_api_processes_share_one_elapsed_clock(deployment: Deployment) -> None:
    clocks = Clocks()
    a = deployment.process(clocks, origin=1_000.0)
    b = deployment.process(clocks, origin=9_876_543.0)  # another host's monotonic origin
    m = new_merchant(a)
    captured = [m.sign(clocks.wall()) for _ in range(4)]
    for i, h in enumerate(captured):
        assert accepted(a if i % 2 else b, h)
    start = a.db.read(
        lambda c: c.execute(
            select(ElapsedClockRow.value).where(ElapsedClockRow.name == ELAPSED)
        ).scalar()
    )
    # both sweep, every 10 s, for most of the retention: nothing may be forgotten early
    for _ in range(int((RETENTION - 60) / 10)):
        clocks.advance(10)
        assert a.access.purge_nonces() == 0 and b.access.purge_nonces() == 0
    assert nonce_count(a, m.mid) == len(captured)
    stored = a.db.read(
        lambda c: c.execute(
            select(ElapsedClockRow.value).where(ElapsedClockRow.name == ELAPSED)
        ).scalar()
    )
    # the shared clock advanced like real time, not once per process
    assert (RETENTION - 60) * 1000 - 100 <= int(stored) - int(start or 0) <= (RETENTION - 60) * 1000
    clocks.advance(120)
    assert a.access.purge_nonces() + b.access.purge_nonces() >= len(captured)
    assert nonce_count(a, m.mid) == 0
    for h in captured:
        assert not accepted(a, h) and not accepted(b, h)


def test_a_restart_on_a_wrong_clock_forgets_nothing_early(deployment: Deployment) -> None:
    clocks = Clocks()
    first = deployment.process(clocks, origin=50_000.0)
    m = new_merchant(first)
    captured = [m.sign(clocks.wall() + d) for d in (-60, 0, 60)]
    assert all(accepted(first, h) for h in captured)
    sweep(first, clocks, 120)
    # the host reboots (its monotonic clock starts again at 0) with its clock an hour ahead
    clocks.jump(3600)
    second = deployment.process(clocks, origin=-clocks.true)
    assert sweep(second, clocks, RETENTION - 200) == 0
    clocks.jump(-3600)
    assert not any(accepted(second, h) for h in captured)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: {**h, "Idempotency-Key": h["Idempotency-Key"] + "x"},
        lambda h: {**h, "Idempotency-Key": h["Idempotency-Key"].upper()},
        lambda h: {k: v for k, v in h.items() if k != "Idempotency-Key"},
        lambda h: {**h, "Idempotency-Key": "other-key"},
    ],
    ids=["extended", "case", "removed", "replaced"],
)
def test_the_signature_covers_the_idempotency_key(
    deployment: Deployment, change: Callable[[dict[str, str]], dict[str, str]]
) -> None:
    clocks = Clocks()
    inst = deployment.process(clocks)
    m = new_merchant(inst)
    h = m.sign(clocks.wall(), idem="refund-key-1")
    with pytest.raises(Unauthenticated) as info:
        inst.access.authenticate_merchant("GET", PATH, change(h), b"")
    assert info.value.code == "unauthenticated"  # a bad signature, not a replay
    # a key added to a request signed without one
    plain = m.sign(clocks.wall())
    with pytest.raises(Unauthenticated):
        inst.access.authenticate_merchant("GET", PATH, {**plain, "Idempotency-Key": "k1"}, b"")
    assert accepted(inst, h)  # the request as signed is fine


# --- a real server under libfaketime ----------------------------------------------------------

FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@contextlib.contextmanager
def _served(db: str, keys: Path, token: str, extra: list[str]) -> Iterator[World]:
    """The institution initialised at ``db`` served with ``extra`` (as
    tests.faults.common.served_on, without its ``init``); stopped at the end."""
    server = ServerProcess(db, keys, extra=extra).start()
    w = World(server, token)
    try:
        yield w
    finally:
        w.close()
        server.stop()


def _refunded(m: Any, order_id: str) -> int:
    return int(order(m, order_id)["refunded_amount"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("jump", [3600, -3600])
def test_refunds_replayed_across_real_clock_jumps_are_never_applied(
    backend: str, jump: int, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path(FAKETIME).exists():
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    with tempfile.TemporaryDirectory(prefix="safescan-faketime-") as d:
        tmp = Path(d)
        db = make_db(backend, request, tmp)
        clock = tmp / "faketime"
        clock.write_text("+0\n")
        # initialised before faketime is preloaded (the file's clock is +0 until the jump, the
        # true time either way): init and manufacturer add are then forked from the worker's
        # zygote (tests/institution/zygote.py), not two new interpreters under faketime
        token = init_db(db, tmp / "keys")
        # the processes started from here read the file's clock (+0 until the jump): the server
        monkeypatch.setenv("LD_PRELOAD", FAKETIME)
        monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(clock))
        monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
        monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        extra = ["--merchant-rate", "0", "--maintenance-interval", "0.3"]
        with _served(db, tmp / "keys", token, extra) as w:
            for name in ("LD_PRELOAD", "FAKETIME_TIMESTAMP_FILE"):
                monkeypatch.delenv(name)  # not the carriers' and other processes' clocks
            m = w.merchant("Jump Cafe")
            cid = w.customer({"EUR": 1_000_000})
            carrier = w.carrier(cid)
            o = m.order([("Jump", 1, 10_000)])
            assert w.pay(o["code"], carrier.authorize(o["code"]), "jp").status_code == 201
            path = f"/v1/merchant/orders/{o['order_id']}/refunds"
            captured = []
            for i, key in enumerate([None, "jump-ref-1", None, "jump-ref-2"]):
                body = json.dumps({"amount": 100 + i}).encode()
                h = sign_request(m.key, m.merchant_id, "POST", path, body, idempotency_key=key)
                h["Content-Type"] = "application/json"
                r = w.http.post(path, content=body, headers=h)
                assert r.status_code == 201, r.text
                captured.append((body, h))
            refunded = _refunded(m, o["order_id"])
            clock.write_text(f"{jump:+d}\n")  # the server's clock jumps
            time.sleep(2.0)  # maintenance sweeps run on the jumped clock
            clock.write_text("+0\n")  # and it is corrected
            time.sleep(1.0)
            answers = []
            for body, h in captured:
                tries = [h]
                if "Idempotency-Key" in h:
                    tries = [
                        {**h, "Idempotency-Key": h["Idempotency-Key"] + "-x"},
                        {k: v for k, v in h.items() if k != "Idempotency-Key"},
                        h,
                    ]
                for hh in tries:
                    r = w.http.post(path, content=body, headers=hh)
                    answers.append(r.status_code)
                    assert r.status_code in (200, 201, 401), r.text
                    if r.status_code in (200, 201):  # only the same request with its key:
                        assert hh is h and "Idempotency-Key" in h  # the stored answer
            assert _refunded(m, o["order_id"]) == refunded, answers
            print(f"{backend} jump {jump:+d}: {len(answers)} replays, answers {answers}, 0 applied")
