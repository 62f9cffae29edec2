"""An active attacker on the TCP link: flips, replays, reorders and drops frames.

Every attack is detected (the session closes; no payment is authorized through a tampered
frame), and the attacker's capture never holds the PIN or the code's contents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CarrierTimeout, ChannelError
from safescan.carrier.pin import pad_pin
from safescan.carrier.provision import personalize
from safescan.carrier.testing import ATTACKS, AttackerProxy, CarrierProcess, LocalInstitution

from .conftest import PIN

SECRET_TEXTS = [
    PIN.encode(),
    pad_pin(PIN),
    b"Corner Bakery",
    b"Croissant",
    b"Baguette",
    b"order-77",
]


@pytest.fixture(scope="module")
def institution() -> LocalInstitution:
    """One institution for the module's one card (it personalised it)."""
    return LocalInstitution.create()


@pytest.fixture(scope="module")
def card_url(
    tmp_path_factory: pytest.TempPathFactory, institution: LocalInstitution
) -> Iterator[str]:
    proc = CarrierProcess(Path(tmp_path_factory.mktemp("proxy")) / "c.state")
    proc.start()
    try:
        proxy = AttackerProxy(proc.url)  # personalise through the attacker, too
        try:
            with CarrierClient.connect(proxy.url) as client:
                institution.manufacture(client)
                personalize(client, institution.make_bundle, PIN, 5)
            assert_clean(proxy.captured(), [])
        finally:
            proxy.close()
        yield proc.url
    finally:
        proc.stop()


def assert_clean(capture: bytes, extra: list[bytes]) -> None:
    for secret in SECRET_TEXTS + extra:
        assert secret not in capture, secret


def counter(url: str) -> int:
    with CarrierClient.connect(url) as client:
        return client.get_info().signature_counter


def payment(client: CarrierClient, institution: LocalInstitution, code: str | bytes) -> list[int]:
    """OPEN CODE (secure frame 0), VERIFY PIN (1), AUTHORIZE (2), then one more secure frame."""
    got: list[int] = []
    client.open_session(institution.trust)
    contents = client.open_code(code)
    client.verify_pin(PIN)
    got.append(client.authorize(merchant_id=contents.merchant.id, amount=335, currency=978).counter)
    client.pin_verified()
    return got


def test_clean_run_through_proxy(card_url: str, institution: LocalInstitution) -> None:
    proxy = AttackerProxy(card_url)
    code = institution.dynamic_code(order_id="order-77", text=False)
    try:
        with CarrierClient.connect(proxy.url) as client:
            assert len(payment(client, institution, code)) == 1
    finally:
        proxy.close()
    assert_clean(proxy.captured(), [code])  # type: ignore[list-item]


CASES = [
    (a, k)
    for a in ATTACKS
    for k in (0, 1, 2)
    if not (k == 0 and a in ("replay_response", "reorder_commands"))
]


@pytest.mark.parametrize(("attack", "k"), CASES)
def test_attack_is_detected(
    card_url: str, institution: LocalInstitution, attack: str, k: int
) -> None:
    before = counter(card_url)
    proxy = AttackerProxy(card_url)
    proxy.attack = (attack, k)
    code = institution.dynamic_code(order_id="order-77", text=False)
    returned: list[int] = []
    try:
        with CarrierClient.connect(proxy.url, timeout=0.5) as client:
            with pytest.raises((ChannelError, CarrierTimeout)):
                client.open_session(institution.trust)
                contents = client.open_code(code)
                client.verify_pin(PIN)
                auth = client.authorize(merchant_id=contents.merchant.id, amount=335, currency=978)
                returned.append(auth.counter)
                client.pin_verified()  # the frame after the last one
            assert not client.has_session
    finally:
        proxy.close()
    assert proxy.fired
    delta = counter(card_url) - before
    if attack == "replay_command" and k == 2:
        assert returned and delta == 1  # the replayed AUTHORIZE was not executed twice
    else:
        assert not returned  # nothing was authorized past a tampered frame
        assert delta in (0, 1) and (delta == 0 or k == 2)
    assert_clean(proxy.captured(), [code])  # type: ignore[list-item]
    # the carrier itself is fine: a clean session works at once
    with CarrierClient.connect(card_url) as client:
        assert payment(client, institution, institution.dynamic_code()) == [before + delta + 1]
