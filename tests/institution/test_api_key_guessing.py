"""Guessing merchant API keys against a real server (its own, since it exhausts the address's
budget of wrong keys): wrong keys in several shapes answer 401, identically whether the key id
exists or not (no answer tells a known id from an unknown one; the comparison is constant-time
by construction, :func:`hmac.compare_digest` against a dummy hash for unknown ids); past the
burst of :data:`~safescan.institution.http.auth.FAILED_KEY_RATE` every Bearer request from the
address is refused with 429 before any key is looked at, the right key included, so guessing
gets no more answers. Signed requests are not affected.

The server refills the budget once an hour here (tests.institution.slow_key_refill): at the
real one token a second, a test slowed down by a loaded machine got a token back between two
guesses (401 where 429 was expected); the burst and the cut-off are what is checked.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.institution.http.auth import FAILED_KEY_RATE
from tests.institution.conftest import BACKENDS, Initialise
from tests.institution.harness import World, world_in
from tests.institution.test_api_keys import make_key


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, initialised: Initialise) -> Iterator[World]:
    """This module's own server (it spends the address's budget), refilling it hourly."""
    with tempfile.TemporaryDirectory(prefix="safescan-inst-") as d:
        tmp = Path(d)
        db_url, token = initialised(request.param, request, tmp)
        module = "tests.institution.slow_key_refill"
        with world_in(tmp, db_url, extra=[], token=token, module=module) as w:
            yield w


def _get(world: World, key: str) -> tuple[int, dict[str, str]]:
    r = world.http.get("/v1/merchant/orders", headers={"Authorization": f"Bearer {key}"})
    return r.status_code, r.json().get("error", {})


def test_guessing_keys_is_cut_off_for_the_address(world: World) -> None:
    m = world.merchant()
    made = make_key(m, "orders:read")
    key_id = made["id"]
    # a wrong secret for the real key id and a made-up key id: the same answer, word for word
    known_id = _get(world, f"sk_live_{key_id}_{secrets.token_urlsafe(32)}")
    unknown_id = _get(world, f"sk_live_{'a' * 16}_{secrets.token_urlsafe(32)}")
    assert (
        known_id
        == unknown_id
        == (
            401,
            {
                "type": "InvalidApiKey",
                "code": "invalid_api_key",
                "message": "the API key is not valid",
            },
        )
    )
    # keep guessing in several shapes until the address's burst is spent
    guesses = [
        lambda: f"sk_live_{key_id}_{secrets.token_urlsafe(32)}",  # right id, random secret
        lambda: f"sk_live_{made['key'][25:-1]}{secrets.choice('AB')}",  # near miss, wrong shape
        # last character guessed (never the right one: that would be the key itself)
        lambda: made["key"][:-1] + secrets.choice([c for c in "ABCDEFGH" if c != made["key"][-1]]),
        lambda: f"sk_live_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}",  # random id
    ]
    answers = [
        _get(world, guesses[i % len(guesses)]())[0] for i in range(int(FAILED_KEY_RATE[1]) + 10)
    ]
    assert set(answers) == {401, 429}
    assert answers[-5:] == [429] * 5
    # now even the right key gets no answer from this address
    status, err = _get(world, made["key"])
    assert status == 429 and err["code"] == "rate_limited", err
    # the last guesses never reached the key check: the key was not used by them
    r = m.request("GET", "/v1/merchant/api-keys")
    assert r.status_code == 200  # signed requests are not gated by the Bearer limit
    assert r.json()["api_keys"][0]["last_used_at"] is None
