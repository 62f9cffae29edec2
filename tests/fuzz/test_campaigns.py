"""Short fuzzing campaigns over every fuzz/ harness (the long ones: docs/fuzzing.md).

Each harness's ``TestOneInput`` gets its real seed corpus, then a few thousand seeded mutated
and random inputs (deterministic: the same inputs every run), then a bounded hypothesis
campaign of raw bytes. A crash (an exception that is not a typed SafescanError, or a broken
harness property) fails the test and shows the input. Each test also checks that the campaign
went deep: valid inputs were accepted and the deeper typed errors were reached, so a harness
that silently stopped reaching the parser would fail here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from types import ModuleType

import pytest
from fuzz._common import Campaign, campaign, mutate
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz import fuzz_apdu, fuzz_api, fuzz_code, fuzz_emv, fuzz_validation, fuzz_webhook_url

HYPOTHESIS = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # a crash is reported as found: no shrinking
)


def run(harness: ModuleType, runs: int, seed: int = 7) -> Campaign:
    """A bounded campaign; a crash propagates with the input in hex as a note."""
    outcomes: Counter[str] = harness.OUTCOMES
    return campaign(
        harness.TestOneInput,
        harness.seeds(),
        runs=runs,
        # the count bounds a campaign, not the clock: each test asserts every input ran, so a
        # cap of 30 s failed test_api_campaign on a loaded machine (1,088 of 3,000 inputs).
        # This cap only stops a hung harness before pytest's own timeout (300 s).
        max_seconds=240,
        seed=seed,
        tokens=harness.TOKENS,
        outcomes=outcomes,
    )


def test_mutate_changes_inputs_and_is_seeded() -> None:
    import random

    pool = [b"0123456789" * 4]
    first = [mutate(pool[0], random.Random(1), pool, (b"SS1:",)) for _ in range(50)]
    again = [mutate(pool[0], random.Random(1), pool, (b"SS1:",)) for _ in range(50)]
    assert first == again
    assert sum(m != pool[0] for m in first) >= 45


def test_campaign_reports_the_crashing_input() -> None:
    def target(data: bytes) -> None:
        if data == b"boom":
            raise ValueError("crash")

    with pytest.raises(ValueError) as info:
        campaign(target, [b"ok", b"boom"], runs=10)
    assert info.value.fuzz_input == b"boom"  # type: ignore[attr-defined]
    assert info.value.__notes__ == ["fuzz input (4 bytes, hex): 626f6f6d"]


def test_code_campaign() -> None:
    result = run(fuzz_code, 20_000)
    assert result.inputs >= 20_000
    seen = result.outcomes
    # Accepted codes and objects, and every layer of open_code refusing something.
    for outcome in (
        "ok",
        "MalformedCode",
        "UnsupportedVersion",
        "KeyRetired",
        "DecryptionFailed",
        "SignatureInvalid",
        "CertificateError",
    ):
        assert seen[outcome] > 0, (outcome, seen)


def test_emv_campaign() -> None:
    result = run(fuzz_emv, 40_000)
    assert result.inputs >= 40_000
    seen = result.outcomes
    for outcome in (
        "ok",
        "EmvFormatError",
        "EmvLengthError",
        "EmvCrcError",
        "EmvDuplicateId",
        "EmvMissingField",
    ):
        assert seen[outcome] > 0, (outcome, seen)


def test_apdu_campaign() -> None:
    result = run(fuzz_apdu, 15_000)
    assert result.inputs >= 15_000
    seen = result.outcomes
    for outcome in (
        "ApduError",
        "ChannelError",
        "ImageError",
        "card SW 9000",
        "card SW 6700",
        "card SW 6988",  # forged secure-messaging frames refused
        "in channel SW 9000",  # commands accepted inside a live secure channel
        "in channel SW 6A80",
    ):
        assert seen[outcome] > 0, (outcome, seen)


def test_api_campaign() -> None:
    result = run(fuzz_api, 3000)
    assert result.inputs >= 3000
    seen = result.outcomes
    for outcome in (
        "201",  # the seeds' valid payments, orders, merchants ... were accepted
        "400 invalid_request",
        "404 not_found",
        "401 unauthenticated",
        "422 decryption_failed",  # payment codes reached the code parser
    ):
        assert seen[outcome] > 0, (outcome, seen)


def test_webhook_url_campaign() -> None:
    result = run(fuzz_webhook_url, 40_000)
    assert result.inputs >= 40_000
    seen = result.outcomes
    for outcome in ("ok", "WebhookUrlRefused", "address refused", "address public"):
        assert seen[outcome] > 0, (outcome, seen)


def test_validation_campaign() -> None:
    """The input checks of issue #13: every target reached, accepted and refused inputs both."""
    result = run(fuzz_validation, 20_000)
    assert result.inputs > 1000
    seen = set(result.outcomes)
    assert "ok" in seen
    assert {"UnsafeText", "InvalidNumber", "WeakPublicKey", "CertificateError"} <= seen, seen
    assert {"HostNotAllowed", "WebRequestRefused"} & seen, seen


HARNESSES: dict[str, Callable[[bytes], None]] = {
    "code": fuzz_code.TestOneInput,
    "emv": fuzz_emv.TestOneInput,
    "apdu": fuzz_apdu.TestOneInput,
    "api": fuzz_api.TestOneInput,
    "webhook_url": fuzz_webhook_url.TestOneInput,
    "validation": fuzz_validation.TestOneInput,
}


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_hypothesis_bytes(name: str) -> None:
    """Raw bytes from hypothesis (its own generator, edge-biased), each target selector."""
    target = HARNESSES[name]

    @HYPOTHESIS
    @given(st.integers(0, 255), st.binary(max_size=400))
    def check(selector: int, payload: bytes) -> None:
        target(bytes([selector]) + payload)

    check()
