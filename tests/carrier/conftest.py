"""Fixtures: a local institution, in-process cards, and carrier processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import FileStorage, MemoryStorage
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution
from safescan.carrier.transport.loopback import LoopbackTransport

PIN = "246810"


class Clock:
    """A settable clock for in-process cards."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def institution() -> LocalInstitution:
    """A fresh offline institution per test: its ``now`` is the test's start, so codes it
    issues are valid for carrier processes (real clock) however long the suite has run."""
    return LocalInstitution.create()


@pytest.fixture
def clock(institution: LocalInstitution) -> Clock:
    return Clock(institution.now)


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def card(storage: MemoryStorage, clock: Clock, institution: LocalInstitution) -> Card:
    """A blank card, attested at the factory (the manufacturing step)."""
    card = Card(storage, clock=clock)
    card.power_on()
    factory = connect(card)
    institution.manufacture(factory)
    factory.power_off()
    return card


def connect(card: Card) -> CarrierClient:
    client = CarrierClient(LoopbackTransport(card))
    client.power_on()
    return client


def personalised_state(
    state: Path, institution: LocalInstitution, clock: Clock, retry_limit: int
) -> Path:
    """``state``: the EEPROM image file of a card manufactured, personalised (PIN ``PIN``,
    ``retry_limit`` tries) and powered off, for the tests that attack the file itself."""
    card = Card(FileStorage(state), clock=clock)
    card.power_on()
    client = connect(card)
    institution.manufacture(client)
    personalize(client, institution.make_bundle, PIN, retry_limit)
    card.power_off()
    return state


@pytest.fixture
def blank(card: Card) -> CarrierClient:
    """A client on a BLANK in-process card."""
    return connect(card)


@pytest.fixture
def carrier(card: Card, institution: LocalInstitution) -> CarrierClient:
    """A client on a personalised in-process card (PIN ``PIN``, retry limit 5), session open."""
    client = connect(card)
    personalize(client, institution.make_bundle, PIN, 5)
    client.open_session(institution.trust)
    return client


@pytest.fixture
def process(tmp_path: Path) -> Iterator[CarrierProcess]:
    """A carrier process on 127.0.0.1:free port, stopped after the test."""
    proc = CarrierProcess(tmp_path / "carrier.state")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
