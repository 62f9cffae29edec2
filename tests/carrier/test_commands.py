"""The full command set, in process (Card + loopback transport + CarrierClient)."""

from __future__ import annotations

import pytest

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, Reason, StatusWord
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import (
    CarrierAuthenticationError,
    CarrierBlocked,
    CodeRefused,
    ConditionsNotSatisfied,
    ConfirmationMismatch,
    NotFound,
    SecureMessagingError,
    SecurityStatusNotSatisfied,
    WrongData,
    WrongLength,
)
from safescan.carrier.provision import personalize
from safescan.carrier.testing import DEFAULT_MERCHANT, LocalInstitution
from safescan.code import (
    CertificateError,
    CertificateRevoked,
    CodeKind,
    LineItem,
    Merchant,
    RevocationList,
    SchemeKey,
    SigningKey,
    TrustStore,
    VerifyKey,
)

from .conftest import PIN, Clock, connect


def test_select_and_get_info_blank(blank: CarrierClient) -> None:
    resp = blank.transmit(CommandApdu(0x00, Ins.SELECT, 4, 0, rom.AID))
    assert resp.ok and resp.data == bytes([*rom.VERSION, Lifecycle.BLANK])
    info = blank.get_info()
    assert info.lifecycle is Lifecycle.BLANK and info.version == rom.VERSION
    assert info.attestation_key is not None and info.signing_key is None
    assert info.carrier_serial is None and info.certificate is None
    assert "ed25519" in info.algorithms and info.pin_tries_this_power_cycle == 3


def test_atr(blank: CarrierClient) -> None:
    assert blank.atr == rom.ATR and blank.atr[0] == 0x3B


def test_unknown_applet(blank: CarrierClient) -> None:
    resp = blank.transmit(CommandApdu(0x00, Ins.SELECT, 4, 0, b"\xa0\x00\x00\x00\x03"))
    assert resp.sw == StatusWord.APPLET_NOT_FOUND


def test_commands_need_select(blank: CarrierClient) -> None:
    resp = blank.transmit(CommandApdu(0x80, Ins.GET_INFO))
    assert resp.sw == StatusWord.CONDITIONS_NOT_SATISFIED and resp.data == b""
    last = blank.last_error()
    assert last is not None and last.reason == Reason.NOT_SELECTED


@pytest.mark.parametrize(
    ("cla", "ins", "p1", "sw"),
    [
        (0x90, Ins.GET_INFO, 0, StatusWord.CLA_NOT_SUPPORTED),
        (0x80, 0x99, 0, StatusWord.INS_NOT_SUPPORTED),
        (0x00, Ins.GET_INFO, 0, StatusWord.INS_NOT_SUPPORTED),
        (0x80, Ins.GET_DATA, 1, StatusWord.REFERENCED_DATA_NOT_FOUND),  # no object 0100
        (0x80, Ins.OPEN_SECURE_CHANNEL, 1, StatusWord.INCORRECT_P1P2),
        (0x80, Ins.VERIFY_PIN, 0, StatusWord.SECURITY_STATUS_NOT_SATISFIED),
        (0x84, Ins.VERIFY_PIN, 0, StatusWord.SM_DATA_MISSING),
    ],
)
def test_access_rules(blank: CarrierClient, cla: int, ins: int, p1: int, sw: int) -> None:
    blank.select()
    assert blank.transmit(CommandApdu(cla, ins, p1, 0, b"")).sw == sw


def test_personalize_flow(blank: CarrierClient, institution: LocalInstitution) -> None:
    info = personalize(blank, institution.make_bundle, PIN, 7)
    assert info.lifecycle is Lifecycle.PERSONALIZED
    assert info.retries_left == info.retry_limit == 7
    assert info.certificate is not None and info.certificate.public_key == info.signing_key
    assert info.carrier_serial is not None and info.signature_counter == 0
    # the attested session ended with PERSONALIZE; the certified key now authenticates
    assert not blank.has_session
    blank.open_session(institution.trust)
    blank.verify_pin(PIN)


def test_personalize_is_once(carrier: CarrierClient, institution: LocalInstitution) -> None:
    with pytest.raises(ConditionsNotSatisfied):
        personalize(carrier, institution.make_bundle, PIN)
    carrier.open_session(institution.trust)
    with pytest.raises(ConditionsNotSatisfied) as exc:
        carrier.generate_keys()
    assert exc.value.reason == Reason.ALREADY_PERSONALIZED


def test_personalize_needs_keys(blank: CarrierClient) -> None:
    blank.open_session()
    with pytest.raises(ConditionsNotSatisfied) as exc:
        blank.personalize(b"x" * 40, PIN)
    assert exc.value.reason == Reason.KEYS_NOT_GENERATED


@pytest.mark.parametrize("limit", [2, 17])
def test_personalize_retry_limit_range(
    blank: CarrierClient, institution: LocalInstitution, limit: int
) -> None:
    blank.open_session()
    keys = blank.generate_keys()
    with pytest.raises(WrongData) as exc:
        blank.personalize(institution.make_bundle(keys), PIN, limit)
    assert exc.value.reason == Reason.BAD_RETRY_LIMIT
    assert blank.get_info().lifecycle is Lifecycle.BLANK


def test_personalize_rejects_foreign_bundle(
    blank: CarrierClient, institution: LocalInstitution, card: Card
) -> None:
    other = connect(Card(type(card.eeprom.storage)(), clock=card.clock))  # another blank card
    institution.manufacture(other)
    other.open_session()
    other_keys = other.generate_keys()
    blank.open_session()
    blank.generate_keys()
    with pytest.raises(WrongData) as exc:
        blank.personalize(institution.make_bundle(other_keys), PIN)
    assert exc.value.reason == Reason.BAD_BUNDLE
    assert blank.get_info().lifecycle is Lifecycle.BLANK


def test_generate_keys_is_attested(blank: CarrierClient) -> None:
    info = blank.open_session()
    keys = blank.generate_keys()
    assert info.attestation_key is not None
    keys.verify(info.attestation_key)
    after = blank.get_info()
    assert after.signing_key == keys.signing_public and after.transport_key == keys.transport_public


def test_pinned_attestation_key(blank: CarrierClient) -> None:
    with pytest.raises(CarrierAuthenticationError):
        blank.open_session(attestation_key=SigningKey.generate().public_key)


def test_open_session_requires_trusted_certificate(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    with pytest.raises(CarrierAuthenticationError):
        carrier.open_session(None)
    with pytest.raises(CertificateError):
        carrier.open_session(TrustStore({institution.kid: SigningKey.generate().public_key}))
    serial = carrier.get_info().certificate.serial  # type: ignore[union-attr]
    revoked = institution.trust
    crl = RevocationList.issue(
        institution.key, institution.kid, sequence=1, issued_at=institution.now, serials={serial}
    )
    revoked.apply_revocations(crl)
    with pytest.raises(CertificateRevoked):
        carrier.open_session(revoked)


def test_impostor_card_fails_channel_authentication(
    carrier: CarrierClient, institution: LocalInstitution, card: Card
) -> None:
    # The card's GET INFO is swapped for one carrying another carrier's valid certificate:
    # the handshake signature then does not verify under that certificate's key.
    fake_key = SigningKey.generate()
    assert card.image is not None
    real = card.image.certificate
    from safescan.code import Role, carrier_subject, issue_certificate

    forged = issue_certificate(
        institution.key,
        institution.kid,
        serial=card.image.carrier_serial or 0,
        role=Role.CARRIER,
        subject=carrier_subject(card.image.carrier_serial or 0),
        public_key=fake_key.public_key,
        not_before=institution.now - 10,
        not_after=institution.now + 1000,
    )
    card.image.certificate = forged.to_bytes()
    try:
        with pytest.raises(CarrierAuthenticationError):
            carrier.open_session(institution.trust)
    finally:
        card.image.certificate = real


def test_full_payment(carrier: CarrierClient, institution: LocalInstitution) -> None:
    text = institution.dynamic_code(order_id="order-42")
    contents = carrier.open_code(text)
    assert contents.kind is CodeKind.DYNAMIC
    assert contents.merchant == DEFAULT_MERCHANT
    assert contents.order_id == "order-42" and contents.total == 335 and contents.currency == 978
    assert contents.items == (LineItem("Croissant", 2, 120), LineItem("Baguette", 1, 95))
    assert contents.issuer == "institution" and contents.issuer_kid == institution.kid
    assert contents.scheme_kid == institution.scheme.kid and len(contents.digest) == 32
    carrier.verify_pin(PIN)
    auth = carrier.authorize(merchant_id="m-1001", amount=335, currency=978)
    info = carrier.get_info()
    assert auth.counter == 1 == info.signature_counter
    assert auth.carrier_serial == info.carrier_serial and auth.order_id == "order-42"
    assert auth.code_digest == contents.digest
    assert info.signing_key is not None
    auth.verify(info.signing_key)


def test_binary_code_and_merchant_signed(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    issuer = institution.merchant_issuer()
    binary = institution.dynamic_code(issuer=issuer, text=False)
    contents = carrier.open_code(binary)
    assert contents.issuer == "merchant"
    assert issuer.certificate is not None
    assert contents.certificate_serial == issuer.certificate.serial


def test_static_code_customer_amount(carrier: CarrierClient, institution: LocalInstitution) -> None:
    contents = carrier.open_code(institution.static_code())
    assert contents.kind is CodeKind.STATIC and contents.total is None and contents.currency == 978
    carrier.verify_pin(PIN)
    with pytest.raises(ConfirmationMismatch):  # currency fixed by the code
        carrier.authorize(merchant_id="m-1001", amount=500, currency=840)
    carrier.open_code(institution.static_code())
    auth = carrier.authorize(merchant_id="m-1001", amount=500, currency=978)
    assert auth.amount == 500 and auth.order_id == ""


def test_static_code_without_currency(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    carrier.open_code(institution.static_code(currency=None))
    carrier.verify_pin(PIN)
    with pytest.raises(CodeRefused) as exc:
        carrier.authorize(merchant_id="m-1001", amount=500, currency=999)
    assert exc.value.error_code == "unknown_currency"
    carrier.open_code(institution.static_code(currency=None))
    assert carrier.authorize(merchant_id="m-1001", amount=0 + 7, currency=392).currency == 392


@pytest.mark.parametrize(
    "confirm",
    [
        {"merchant_id": "m-1002", "amount": 335, "currency": 978},
        {"merchant_id": "m-1001", "amount": 336, "currency": 978},
        {"merchant_id": "m-1001", "amount": 335, "currency": 840},
    ],
)
def test_confirmation_must_match_exactly(
    carrier: CarrierClient, institution: LocalInstitution, confirm: dict[str, object]
) -> None:
    carrier.open_code(institution.dynamic_code())
    carrier.verify_pin(PIN)
    with pytest.raises(ConfirmationMismatch):
        carrier.authorize(**confirm)  # type: ignore[arg-type]
    # the pending code is consumed by the refused attempt too
    with pytest.raises(ConditionsNotSatisfied) as exc:
        carrier.authorize(merchant_id="m-1001", amount=335, currency=978)
    assert exc.value.reason == Reason.NO_PENDING_CODE
    assert carrier.get_info().signature_counter == 0


def test_authorize_needs_pin_each_time(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    carrier.open_code(institution.dynamic_code())
    with pytest.raises(SecurityStatusNotSatisfied) as exc:
        carrier.authorize(merchant_id="m-1001", amount=335, currency=978)
    assert exc.value.reason == Reason.PIN_REQUIRED
    carrier.verify_pin(PIN)
    assert carrier.pin_verified()
    carrier.authorize(merchant_id="m-1001", amount=335, currency=978)
    assert not carrier.pin_verified()
    carrier.open_code(institution.dynamic_code())
    with pytest.raises(SecurityStatusNotSatisfied):
        carrier.authorize(merchant_id="m-1001", amount=335, currency=978)


def test_pending_code_is_consumed(carrier: CarrierClient, institution: LocalInstitution) -> None:
    carrier.open_code(institution.dynamic_code())
    carrier.verify_pin(PIN)
    first = carrier.authorize(merchant_id="m-1001", amount=335, currency=978)
    carrier.verify_pin(PIN)
    with pytest.raises(ConditionsNotSatisfied):
        carrier.authorize(merchant_id="m-1001", amount=335, currency=978)
    carrier.open_code(institution.dynamic_code())
    second = carrier.authorize(merchant_id="m-1001", amount=335, currency=978)
    assert second.counter == first.counter + 1


def test_new_session_forgets_pin_and_pending(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    carrier.open_code(institution.dynamic_code())
    carrier.verify_pin(PIN)
    carrier.open_session(institution.trust)
    with pytest.raises(SecurityStatusNotSatisfied):
        carrier.authorize(merchant_id="m-1001", amount=335, currency=978)


@pytest.mark.parametrize(
    ("make", "error_code"),
    [
        (lambda i: i.dynamic_code(issued_at=i.now - 7200, lifetime=600), "code_expired"),
        (lambda i: i.dynamic_code(issued_at=i.now + 3600), "code_not_yet_valid"),
        (lambda i: "SS1:" + "A" * 40, "malformed_code"),
        (lambda i: "hello", "malformed_code"),
        (
            lambda i: LocalInstitution.create(now=i.now, scheme_kid=9).dynamic_code(),
            "unknown_key_id",
        ),
    ],
)
def test_bad_codes_are_refused_with_reason(
    carrier: CarrierClient, institution: LocalInstitution, make: object, error_code: str
) -> None:
    with pytest.raises(CodeRefused) as exc:
        carrier.open_code(make(institution))  # type: ignore[operator]
    assert exc.value.error_code == error_code and exc.value.message


def test_swapped_scheme_key_code_is_refused(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    forger = LocalInstitution(SigningKey.generate(), institution.kid, institution.scheme, 0)
    forger.now = institution.now
    with pytest.raises(CodeRefused) as exc:
        carrier.open_code(forger.dynamic_code())  # sealed right, signed by a stranger
    assert exc.value.error_code == "signature_invalid"


def test_altered_code_is_refused(carrier: CarrierClient, institution: LocalInstitution) -> None:
    binary = bytearray(institution.dynamic_code(text=False))  # type: ignore[arg-type]
    binary[60] ^= 1
    with pytest.raises(CodeRefused) as exc:
        carrier.open_code(bytes(binary))
    assert exc.value.error_code == "decryption_failed"


def test_refused_code_clears_pending(carrier: CarrierClient, institution: LocalInstitution) -> None:
    carrier.open_code(institution.dynamic_code())
    with pytest.raises(CodeRefused):
        carrier.open_code("SS1:00")
    carrier.verify_pin(PIN)
    with pytest.raises(ConditionsNotSatisfied):
        carrier.authorize(merchant_id="m-1001", amount=335, currency=978)


def test_lookalike_warning_passes_through(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    shady = Merchant("m-2", "P\u0430ypal", "Lyon", "FR", 5462)  # Cyrillic a
    contents = carrier.open_code(institution.dynamic_code(merchant=shady))
    assert contents.warnings


def test_code_commands_need_channel_and_personalisation(
    blank: CarrierClient, institution: LocalInstitution
) -> None:
    blank.open_session()
    with pytest.raises(ConditionsNotSatisfied) as exc:
        blank.open_code(institution.dynamic_code())
    assert exc.value.reason == Reason.NOT_PERSONALIZED


def test_tamper_destroys(carrier: CarrierClient, card: Card) -> None:
    card.tamper()  # the physical sensor (the carrier process wires it to its control socket)
    assert card.lifecycle is Lifecycle.DESTROYED
    with pytest.raises(CarrierBlocked):
        carrier.get_info()
    carrier.power_cycle()
    with pytest.raises(CarrierBlocked):
        carrier.select()
    assert card.image is not None and card.image.signing_seed is None
    assert card.image.scheme_keys == [] and card.image.pin_verifier is None


def test_destroyed_answers_6983_to_everything(carrier: CarrierClient, card: Card) -> None:
    card.tamper()
    for ins in range(256):
        for cla in (0x00, 0x80, 0x84):
            assert carrier.transmit(CommandApdu(cla, ins)).sw == StatusWord.AUTH_METHOD_BLOCKED


def test_power_cycle_loses_session(carrier: CarrierClient, institution: LocalInstitution) -> None:
    carrier.open_code(institution.dynamic_code())
    carrier.verify_pin(PIN)
    carrier.power_cycle()
    assert not carrier.has_session
    carrier.open_session(institution.trust)
    assert not carrier.pin_verified()
    with pytest.raises(SecurityStatusNotSatisfied):
        carrier.authorize(merchant_id="m-1001", amount=335, currency=978)


def test_stale_host_session_after_card_reset(
    carrier: CarrierClient, card: Card, institution: LocalInstitution
) -> None:
    card.reset()  # the card lost power behind the host's back
    with pytest.raises(SecureMessagingError):
        carrier.verify_pin(PIN)
    assert not carrier.has_session
    carrier.open_session(institution.trust)
    carrier.verify_pin(PIN)


def test_counter_persists_across_power_cycles(
    carrier: CarrierClient, institution: LocalInstitution, card: Card, clock: Clock
) -> None:
    counters = []
    for _ in range(3):
        carrier.open_session(institution.trust)
        carrier.open_code(institution.dynamic_code())
        carrier.verify_pin(PIN)
        counters.append(carrier.authorize(merchant_id="m-1001", amount=335, currency=978).counter)
        carrier.power_cycle()
    assert counters == [1, 2, 3]
    fresh = Card(card.eeprom.storage, clock=clock)
    fresh.power_on()
    assert fresh.image is not None and fresh.image.signature_counter == 3


def test_verify_key_of_authorization_is_certified(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    info = carrier.get_info()
    assert info.certificate is not None
    assert isinstance(info.certificate.public_key, VerifyKey)
    carrier.open_code(institution.dynamic_code())
    carrier.verify_pin(PIN)
    carrier.authorize(merchant_id="m-1001", amount=335, currency=978).verify(
        info.certificate.public_key
    )


def test_not_found_applet_error_type(blank: CarrierClient) -> None:
    resp = blank.transmit(CommandApdu(0x00, Ins.SELECT, 4, 0x0C, b"nope"))
    assert resp.sw == StatusWord.APPLET_NOT_FOUND and resp.data == b""
    with pytest.raises(NotFound) as exc:
        blank._clear(Ins.SELECT, b"nope", p1=4, p2=0x0C)
    assert exc.value.reason == Reason.UNKNOWN_AID and "no such applet" in exc.value.message


def test_code_sealed_to_a_scheme_key_opens_until_the_key_retires(
    card: Card, clock: Clock, institution: LocalInstitution
) -> None:
    """The card's own keyring refuses a retired scheme key (its clock, not the host's)."""
    inst = LocalInstitution(
        SigningKey.generate(), 1, SchemeKey.generate(7, retire_at=clock.now + 100), clock.now
    )
    inst.factory = institution.factory  # the card was attested by the session's factory
    client = connect(card)
    personalize(client, inst.make_bundle, PIN, 5)
    client.open_session(inst.trust)
    assert client.open_code(inst.dynamic_code()).total == 335
    clock.now += 100
    inst.now = clock.now  # a fresh code, so only the key's retirement can refuse it
    with pytest.raises(CodeRefused) as exc:
        client.open_code(inst.dynamic_code())
    assert exc.value.error_code == "key_retired"


def test_update_revocations_makes_the_card_itself_refuse_a_revoked_merchant(
    carrier: CarrierClient, institution: LocalInstitution, card: Card, clock: Clock
) -> None:
    """Whatever the host does afterwards, the card refuses codes signed under a merchant
    certificate on the newest revocation list it took; older, forged or oversize lists
    change nothing; the list survives power cycles."""
    issuer = institution.merchant_issuer()
    assert issuer.certificate is not None
    code = institution.dynamic_code(issuer=issuer)
    assert carrier.open_code(code).issuer == "merchant"
    assert carrier.get_info().revocations_sequence == 0

    serial = issuer.certificate.serial
    assert carrier.update_revocations(institution.revocation_list({serial}, sequence=3)) == 3
    with pytest.raises(CodeRefused) as refused:
        carrier.open_code(code)
    assert refused.value.reason == Reason.CERTIFICATE_REVOKED
    assert carrier.get_info().revocations_sequence == 3

    before = bytes(card.eeprom.storage.read_image() or b"")
    for stale in (3, 2):  # the same list again, an older one: a rollback is refused
        with pytest.raises(ConditionsNotSatisfied) as exc:
            carrier.update_revocations(institution.revocation_list(set(), sequence=stale))
        assert exc.value.reason == Reason.REVOCATIONS_NOT_NEWER
    forger = LocalInstitution(SigningKey.generate(), institution.kid, institution.scheme, 0)
    with pytest.raises(WrongData, match="revocation list"):
        carrier.update_revocations(forger.revocation_list(set(), sequence=9))
    with pytest.raises(WrongData, match="revocation list"):
        carrier.update_revocations(b"\xa0not a list")
    for huge in ({2**63}, {2**64 - 1}):  # signed, but more than the EEPROM image can hold
        with pytest.raises(WrongData, match="too large"):
            carrier.update_revocations(institution.revocation_list(huge, sequence=11))
    with pytest.raises(WrongData, match="too large"):
        carrier.update_revocations(institution.revocation_list(set(), sequence=2**63))
    with pytest.raises(WrongLength):  # refused by the host before sealing: the session lives on
        carrier.update_revocations(b"x" * (rom.MAX_COMMAND_DATA + 1))
    assert carrier.get_info().revocations_sequence == 3
    assert bytes(card.eeprom.storage.read_image() or b"") == before  # nothing was written

    carrier.power_cycle()
    carrier.open_session(institution.trust)
    with pytest.raises(CodeRefused):
        carrier.open_code(code)
    # a newer list without the serial lifts it
    assert carrier.update_revocations(institution.revocation_list(set(), sequence=4)) == 4
    assert carrier.open_code(code).issuer == "merchant"
    fresh = Card(card.eeprom.storage, clock=clock)
    fresh.power_on()
    assert fresh.image is not None and fresh.image.crl_sequence == 4

    # a genuine list the card cannot keep: it fails closed (issue #13 item 8), it does not go
    # on with its older list as if merchant certificates were checked
    too_many = set(range(1, rom.MAX_REVOKED_SERIALS + 2))
    with pytest.raises(WrongData) as oversize:
        carrier.update_revocations(institution.revocation_list(too_many, sequence=10))
    assert oversize.value.reason == Reason.OVERSIZE_INPUT
    with pytest.raises(ConditionsNotSatisfied) as stale:
        carrier.open_code(code)
    assert stale.value.reason == Reason.REVOCATIONS_STALE
    carrier.power_cycle()  # it is remembered in the EEPROM
    carrier.open_session(institution.trust)
    with pytest.raises(ConditionsNotSatisfied):
        carrier.open_code(code)
    assert carrier.open_code(institution.dynamic_code()).issuer == "institution"
    # too many subjects count like too many serials; a forged list cannot lift it
    subjects = {f"m{i:x}" for i in range(rom.MAX_REVOKED_SERIALS)}
    with pytest.raises(WrongData):
        carrier.update_revocations(institution.revocation_list({1}, sequence=11, subjects=subjects))
    with pytest.raises(WrongData):
        carrier.update_revocations(forger.revocation_list(set(), sequence=12))
    with pytest.raises(ConditionsNotSatisfied):
        carrier.open_code(code)
    # a newer list that fits lifts it; one revoking the merchant as a whole refuses its codes
    assert carrier.update_revocations(institution.revocation_list(set(), sequence=12)) == 12
    assert carrier.open_code(code).issuer == "merchant"
    assert (
        carrier.update_revocations(
            institution.revocation_list(set(), sequence=13, subjects={issuer.certificate.subject})
        )
        == 13
    )
    with pytest.raises(CodeRefused) as by_subject:
        carrier.open_code(code)
    assert by_subject.value.reason == Reason.CERTIFICATE_REVOKED


def test_update_revocations_needs_a_personalised_card(blank: CarrierClient) -> None:
    r = blank.transmit(CommandApdu(rom.CLA_PROPRIETARY, Ins.UPDATE_REVOCATIONS, 0, 0, b"\xa0"))
    assert r.sw == StatusWord.CONDITIONS_NOT_SATISFIED
