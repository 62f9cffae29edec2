"""Carrier (party) names are unique in the session's stack: their state files persist, and two
tests that both used "erin" met through them (conftest.py, :class:`CarrierNameTaken`)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import CarrierNameTaken, Party, World, claim_carrier_name

HERE = Path(__file__).resolve().parent

#: how a test names a carrier started in the session's stack (world.stack)
PATTERNS = [
    (re.compile(r"""\bfresh_party\(\s*["']([^"']+)["']"""), "carrier-{}"),
    (re.compile(r"""\bnew_party\(\s*world\.stack,\s*["']([^"']+)["']"""), "carrier-{}"),
    (re.compile(r"""\bstart_new_carrier\(\s*(?:world\.)?stack,\s*["']([^"']+)["']"""), "{}"),
]


def written_names() -> Counter[str]:
    """Every carrier name written in the e2e tests for the session's stack (a test module
    of the wallet app gets ``carrier-<module tag>`` from its ``party`` fixture)."""
    names: Counter[str] = Counter(["carrier-alice"])  # the world's own customer
    for path in sorted(HERE.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # reuses names on purpose
        text = path.read_text(encoding="utf-8")
        for pattern, form in PATTERNS:
            names.update(form.format(m) for m in pattern.findall(text))
        if path.parent.name == "walletapp" and path.name.startswith("test_"):
            tag = path.stem.removeprefix("test_").replace("_", "")
            if re.search(r"\bparty\b", text):
                names["carrier-" + tag] += 1
    return names


def test_every_carrier_name_in_the_tests_is_used_once() -> None:
    names = written_names()
    assert len(names) > 20  # the patterns still find the tests' names
    assert [n for n, count in names.items() if count > 1] == []


def test_fresh_party_refuses_a_name_used_before(
    world: World, fresh_party: Callable[[str], Party]
) -> None:
    with pytest.raises(CarrierNameTaken, match="'carrier-alice' is already used"):
        fresh_party("alice")  # the world's own customer
    fresh_party("names-once")
    with pytest.raises(CarrierNameTaken, match="names-once"):
        fresh_party("names-once")
    with pytest.raises(CarrierNameTaken):
        claim_carrier_name(world.stack, "carrier-names-once")
