"""End-to-end fixtures: a real institution, key carriers and POS processes on 127.0.0.1.

One institution (SQLite) serves the whole session; each test that breaks a carrier (kills or
destroys it) gets its own carrier and wallet from :func:`fresh_wallet`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safescan.demo import DEMO_PIN, ManagedProcess, Stack
from safescan.merchant.config import PosConfig

PIN = DEMO_PIN
FUNDS = 50_000


@dataclass
class Party:
    """A customer with an enrolled key carrier and a wallet directory."""

    customer_id: str
    carrier: ManagedProcess
    carrier_url: str
    wallet_dir: Path


@dataclass
class World:
    """The running deployment."""

    stack: Stack
    pos: PosConfig
    pos_path: Path
    alice: Party

    @property
    def base_url(self) -> str:
        """The institution."""
        return self.stack.base_url


def new_party(stack: Stack, name: str, fund: int = FUNDS) -> Party:
    """A funded customer with a fresh carrier process, enrolled."""
    proc, url = stack.start_carrier(f"carrier-{name}")
    cid = stack.customer(name.title(), fund=fund)
    wallet_dir = stack.enroll_wallet(cid, url, name=f"wallet-{name}")
    return Party(cid, proc, url, wallet_dir)


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """Institution + merchant + Alice (funded, enrolled), stopped at the end of the session."""
    tmp = Path(tempfile.mkdtemp(prefix="safescan-e2e-"))
    stack = Stack(tmp)
    try:
        stack.begin_institution_init()
        # the webhook test's receiver listens on 127.0.0.1 over http: allowed explicitly
        stack.start_institution(extra=["--webhook-allow", "127.0.0.1", "--webhook-http"])
        pos = stack.onboard_merchant()
        alice = new_party(stack, "alice")
        yield World(stack, pos, tmp / "pos.json", alice)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fresh_party(world: World) -> Iterator[Callable[[str], Party]]:
    """Make another customer with its own carrier (for tests that break carriers)."""
    made: list[Party] = []

    def make(name: str) -> Party:
        party = new_party(world.stack, name)
        made.append(party)
        return party

    yield make
    for party in made:
        party.carrier.stop()
