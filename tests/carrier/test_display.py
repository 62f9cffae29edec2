"""The display model: a lying wallet gets no signature.

The wallet (the host here) is compromised: it shows the customer one thing and asks the card
for another. The card shows what it decrypted itself and signs only after its own OK button
approved exactly that. Variations: altered amount (dynamic and static codes), a different
merchant, a code swapped between what was shown and what is signed, no confirmation at all
(polling forever), the confirmation of a previous transaction, Cancel, buttons pressed when
nothing asks. The plain model signs after the PIN alone, as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safescan.carrier.apdu import Reason
from safescan.carrier.cli import carrier_app
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import MemoryStorage
from safescan.carrier.errors import (
    CarrierUnavailable,
    ConditionsNotSatisfied,
    ConfirmationDeclined,
    ConfirmationMismatch,
    ConfirmationPending,
)
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution
from safescan.code import LineItem, Merchant
from safescan.code.attestation import CarrierModel

from .conftest import PIN, Clock, connect

SHOP = Merchant("m-2002", "Honest Grocer", "Nantes", "FR", 5411)
FRAUD = Merchant("m-6666", "Fraud Corp", "Nowhere", "FR", 5411)
EUR = 978


@pytest.fixture
def display_card(clock: Clock, institution: LocalInstitution) -> Card:
    card = Card(MemoryStorage(), clock=clock, model=int(CarrierModel.DISPLAY))
    card.power_on()
    return card


@pytest.fixture
def host(display_card: Card, institution: LocalInstitution) -> Iterator[CarrierClient]:
    """The (compromised) wallet's connection to a personalised display carrier."""
    client = connect(display_card)
    institution.manufacture(client)
    personalize(client, institution.make_bundle, PIN, 5)
    info = client.open_session(institution.trust)
    assert info.model is CarrierModel.DISPLAY
    yield client


def dynamic(institution: LocalInstitution, merchant: Merchant = SHOP, price: int = 450) -> str:
    code = institution.dynamic_code(
        merchant=merchant, order_id=f"o-{price}", items=(LineItem("Apples", 2, price),)
    )
    assert isinstance(code, str)
    return code


def counter(card: Card) -> int:
    assert card.image is not None
    return card.image.signature_counter


def test_the_card_shows_what_it_decrypted_and_signs_after_ok(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    contents = host.open_code(dynamic(institution))
    screen = display_card.screen
    assert screen["state"] == "code" and screen["merchant"] == "Honest Grocer"
    assert screen["items"] == [LineItem("Apples", 2, 450).display_json(978)]
    assert screen["items"][0]["display"] == "9.00 EUR" and screen["total"] == "9.00 EUR"
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)
    screen = display_card.screen
    assert screen["state"] == "confirm" and screen["amount"] == "9.00 EUR"
    assert screen["prompt"] == "Pay 9.00 EUR to Honest Grocer (Nantes)?"
    assert display_card.press(True) == "approved"
    auth = host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)
    assert auth.amount == 900 and auth.code_digest == contents.digest
    assert display_card.screen["state"] == "signed"


def test_no_confirmation_no_signature_however_long_the_wallet_polls(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    host.open_code(dynamic(institution))
    host.verify_pin(PIN)
    before = counter(display_card)
    for _ in range(25):
        with pytest.raises(ConfirmationPending):
            host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)
    with pytest.raises(ConfirmationPending):  # the client's own wait runs out too
        host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR, confirm_timeout=0.05)
    assert counter(display_card) == before
    assert display_card.screen["state"] == "confirm"


def test_an_altered_amount_is_never_signed(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    # dynamic code: the wallet says 1.00 EUR, asks the card for 1.00: refused outright
    host.open_code(dynamic(institution))
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationMismatch):
        host.authorize(merchant_id=SHOP.id, amount=100, currency=EUR)
    # static code: the wallet shows the customer 2.00 EUR but asks the card for 200.00: the
    # card's own screen says 200.00, the customer (reading it) presses Cancel
    code = institution.static_code(merchant=SHOP)
    host.open_code(code)
    assert display_card.screen["total"] is None  # the amount comes at confirmation
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=20_000, currency=EUR)
    assert display_card.screen["amount"] == "200.00 EUR"
    assert display_card.press(False) == "declined"
    with pytest.raises(ConfirmationDeclined):
        host.authorize(merchant_id=SHOP.id, amount=20_000, currency=EUR)
    with pytest.raises(ConditionsNotSatisfied) as exc:  # the pending code is gone
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)
    assert exc.value.reason == Reason.NO_PENDING_CODE
    # a prompt armed for 2.00, then a request for 200.00 (approved or not): refused, gone
    host.open_code(code)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)
    display_card.press(True)
    with pytest.raises(ConfirmationMismatch):
        host.authorize(merchant_id=SHOP.id, amount=20_000, currency=EUR)
    with pytest.raises(ConditionsNotSatisfied):
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)


def test_a_different_merchant_is_shown_as_it_is(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    """The phone shows 'Honest Grocer' but the code it handed over is the fraudster's: the
    card's screen names the fraudster, and asking in the shop's name is refused."""
    host.open_code(dynamic(institution, merchant=FRAUD))
    assert display_card.screen["merchant"] == "Fraud Corp"
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationMismatch):
        host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)
    host.open_code(dynamic(institution, merchant=FRAUD))
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=FRAUD.id, amount=900, currency=EUR)
    assert "Fraud Corp" in display_card.screen["prompt"]  # what the customer reads and refuses
    display_card.press(False)
    with pytest.raises(ConfirmationDeclined):
        host.authorize(merchant_id=FRAUD.id, amount=900, currency=EUR)


def test_a_code_swapped_after_the_confirmation_is_not_signed(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    host.open_code(dynamic(institution, price=100))
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)
    assert display_card.press(True) == "approved"  # the customer approved 2.00 EUR
    before = counter(display_card)
    host.open_code(dynamic(institution, merchant=FRAUD, price=5000))  # swapped before signing
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=FRAUD.id, amount=10_000, currency=EUR)
    assert counter(display_card) == before
    assert display_card.screen["prompt"] == "Pay 100.00 EUR to Fraud Corp (Nowhere)?"


def test_a_previous_confirmation_does_not_carry_over(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    first = dynamic(institution, price=100)
    host.open_code(first)
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)
    display_card.press(True)
    host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)  # signed, once
    # the same code again, PIN again: a new prompt, the old approval is spent
    host.open_code(first)
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)
    # an approval, then a power cycle (a new session): gone with the RAM
    display_card.press(True)
    host.power_cycle()
    host.open_session(institution.trust)
    host.open_code(first)
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)
    # an approval, then a new session on the same power: gone too
    display_card.press(True)
    host.open_session(institution.trust)
    host.open_code(first)
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=200, currency=EUR)


def test_buttons_pressed_when_nothing_asks_do_nothing(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    assert display_card.press(True) == "nothing to confirm"
    host.open_code(dynamic(institution))
    assert display_card.press(True) == "nothing to confirm"  # a code shown is not a prompt
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)
    assert display_card.press(False) == "declined"
    assert display_card.press(True) == "nothing to confirm"  # no changing one's mind to OK
    with pytest.raises(ConfirmationDeclined):
        host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)


def test_the_wait_helper_signs_once_the_button_is_pressed(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    host.open_code(dynamic(institution))
    host.verify_pin(PIN)
    told: list[str] = []

    def customer_looks_and_presses() -> None:
        told.append(display_card.screen["prompt"])
        display_card.press(True)  # (in process: the "press" happens during the first poll)

    auth = host.authorize(
        merchant_id=SHOP.id,
        amount=900,
        currency=EUR,
        confirm_timeout=30,
        poll=0.01,
        on_pending=customer_looks_and_presses,
    )
    assert auth.amount == 900 and told == ["Pay 9.00 EUR to Honest Grocer (Nantes)?"]


def test_the_plain_model_has_no_buttons(carrier: CarrierClient, card: Card) -> None:
    assert carrier.get_info().model is CarrierModel.PLAIN
    assert card.press(True) == "no buttons on this model"


def test_no_apdu_presses_the_button(
    host: CarrierClient, display_card: Card, institution: LocalInstitution
) -> None:
    """Every instruction, in clear, from a phone app that wants the prompt approved: the
    prompt stays armed and unapproved (the buttons are not on any I/O interface)."""
    from safescan.carrier.apdu import CommandApdu

    host.open_code(dynamic(institution))
    host.verify_pin(PIN)
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)
    prompt = display_card.ram.prompt
    session = display_card.ram.session
    for ins in range(256):
        if ins in (0xA4, 0x50):  # SELECT / OPEN SECURE CHANNEL would end the session
            continue
        for data in (b"", b"OK", b"\x01", bytes(16)):
            display_card.transmit(CommandApdu(0x80, ins, 0, 0, data).to_bytes())
    assert display_card.ram.session is session and display_card.ram.prompt is prompt
    assert prompt is not None and not prompt.approved and not prompt.declined
    with pytest.raises(ConfirmationPending):
        host.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)


def test_display_process_screen_and_buttons_through_the_control_socket(
    tmp_path: Path, institution: LocalInstitution
) -> None:
    runner = CliRunner()
    state = tmp_path / "d.state"
    where = ["--listen", "tcp://127.0.0.1:0", "--model", "display"]
    with CarrierProcess(state, where=where) as proc, CarrierClient.connect(proc.url) as c:
        institution.manufacture(c)
        personalize(c, institution.make_bundle, PIN, 5)
        info = c.open_session(institution.trust)
        assert info.model is CarrierModel.DISPLAY and c.get_info().to_dict()["model"] == "display"
        c.open_code(dynamic(institution))
        c.verify_pin(PIN)
        with pytest.raises(ConfirmationPending):
            c.authorize(merchant_id=SHOP.id, amount=900, currency=EUR)
        shown = runner.invoke(carrier_app, ["screen", "--state", str(state), "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["prompt"] == "Pay 9.00 EUR to Honest Grocer (Nantes)?"
        assert runner.invoke(carrier_app, ["press", "maybe", "--state", str(state)]).exit_code == 2
        pressed = runner.invoke(carrier_app, ["press", "ok", "--state", str(state)])
        assert pressed.exit_code == 0 and "approved" in pressed.output
        assert c.authorize(merchant_id=SHOP.id, amount=900, currency=EUR).amount == 900
    log = state.with_name(state.name + ".log").read_text()
    assert "[carrier display] confirm" in log and "Pay 9.00 EUR to Honest Grocer" in log
    # the model is hardware: the same chip cannot be served as a plain one
    with pytest.raises(CarrierUnavailable):
        CarrierProcess(state, where=["--listen", "tcp://127.0.0.1:0", "--model", "plain"]).start()
    assert (
        "display carrier (fixed at manufacture)" in state.with_name(state.name + ".log").read_text()
    )
