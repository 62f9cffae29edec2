"""``SAFESCAN_FUZZ_SCALE`` (tests/budget.py): a whole number from 1 to 1000, else a clear error."""

from __future__ import annotations

import pytest

from tests.budget import examples, scale


def test_unset_or_empty_is_the_ci_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFESCAN_FUZZ_SCALE", raising=False)
    assert scale() == 1 and examples(2_000) == 2_000
    assert scale("") == 1 and scale(" ") == 1


def test_a_factor_multiplies_every_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFESCAN_FUZZ_SCALE", "5")
    assert scale() == 5 and examples(8_000) == 40_000
    assert scale("1000") == 1000


@pytest.mark.parametrize("bad", ["0", "-1", "1001", "2.5", "five", "1e3", "0x10", "٣"])
def test_anything_else_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="SAFESCAN_FUZZ_SCALE must be a whole number"):
        scale(bad)
