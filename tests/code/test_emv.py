"""Tests for safescan.code.emv: EMVCo Merchant-Presented Mode parse / validate / build."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safescan.code.emv import (
    MAX_PAYLOAD_CHARS,
    EmvFieldValue,
    EmvOversizeError,
    EmvPayload,
    build_emv,
    crc16_ccitt_false,
    emv_to_json,
    is_template_id,
    looks_like_emv,
    parse_emv,
)
from safescan.code.errors import (
    EmvCrcError,
    EmvDuplicateId,
    EmvError,
    EmvFormatError,
    EmvLengthError,
    EmvMissingField,
    OversizeInput,
    SafescanError,
)

# --- published samples (every CRC below was recomputed in test_published_sample_crc) ---------

# EMVCo, "EMV QR Code Specification for Payment Systems (EMV QRCPS) Merchant-Presented Mode",
# v1.0 (July 2017) / v1.1 (Nov 2020), worked example of a payload (Appendix). It carries
# Chinese text in template 64, so it also checks that lengths count characters and that the
# CRC is taken over UTF-8 bytes.
EMVCO_SAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)

# Banco Central do Brasil, "Manual de Padrões para Iniciação do Pix" (BR Code), static QR
# example (key 123e4567-e12b-12d1-a456-426655440000, "Fulano de Tal", BRASILIA).
PIX_STATIC_SAMPLE = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)

# Banco Central do Brasil, same manual, dynamic QR example (payload location URL in 26-25).
PIX_DYNAMIC_SAMPLE = (
    "00020101021226700014br.gov.bcb.pix2548pix.example.com/8b3da2f39a4140d1a91abd93113bd441"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***630464E4"
)

# Singapore PayNow inside an SGQR label (templates 26 SG.PAYNOW and 51 SG.SGQR), the scanned
# example published in the README of github.com/poonchuanan/Python-PayNow-QR-Code-Generator.
SGQR_PAYNOW_SAMPLE = (
    "00020101021126430009SG.PAYNOW010120210T04SS0129D030110502QS"
    "51810007SG.SGQR011221073031741D020701.000103066003160402010503279060400000708"
    "20210730520400005303702"
    "5802SG5925LOVING HEART MULTI-SERVIC6009Singapore6304A177"
)

# Indonesia QRIS static code (templates 26 ID.CO.TELKOM.WWW and 51 ID.CO.QRIS.WWW, tip
# indicator 55=01, postal code 61), the example in the README of the npm package
# @terryds/qris-decoder.
QRIS_SAMPLE = (
    "00020101021126680016ID.CO.TELKOM.WWW011893600898026635207502150001952663520750303UMI"
    "51440014ID.CO.QRIS.WWW0215ID10211254059720303UMI5204549953033605502015802ID"
    "5906BIOLBE6011KAB. MALANG610565168622005091147938120703A03630404CB"
)

# A full SGQR label from "A quick guide on how SGQR code works" (V. Liew, Medium, 2023): its
# CRC (317F) is right, but at 1042 characters it is beyond the EMV MPM limit of 512.
SGQR_OVERSIZE_SAMPLE = (
    "00020101021102164761360000000*1704155123456789123451110123456789012153123456789012341531"
    "250003440001034450003445311000126330015SG.COM.DASH.WWW0110000005550127670014A000000762"
    "00010120COM.LQDPALLIANCE.WWW021512345678901234503020028660011SG.COM.OCBC0147OCBCP2P629A"
    "358D-ECE7-4554-AD56-EBD12D84CA7E4F7329500006SG.EZI013603600006-76bb-4a5a-aa1a-fbcb64d6e"
    "cf530850013SG.COM.EZLINK01201234567890123456-1230204SGQR0324A123456,B123456,C12345670404"
    "A23X31260008COM.GRAB0110A93FO3230Q32390007COM.DBS011012345678900210123456789033900011SG"
    ".COM.NETS01230201401832831128823590002150001118703240000308885872010901199084E5DC3D8344"
    "30017COM.QQ.WEIXIN.PAY011012345678900204123435660010SG.COM.UOB014845D233507F5E8C306E387"
    "1A4E9FACA601A80C114B5645E5D36940009SG.PAYNOW010100216+621234567890123030100435123456789"
    "0123456789012345678901234505082020123137270009SG.AIRPAY0110A11BC0000X51860007SG.SGQR011"
    "2180307510317020701.0003030608100604020205031380609Counter010708201804075204581453037025"
    "802SG5916FOOD XYZ PTE LTD6009SINGAPORE6106081006622301081234567R060787654306304317F"
)

SAMPLES = {
    "emvco": EMVCO_SAMPLE,
    "pix_static": PIX_STATIC_SAMPLE,
    "pix_dynamic": PIX_DYNAMIC_SAMPLE,
    "sgqr_paynow": SGQR_PAYNOW_SAMPLE,
    "qris": QRIS_SAMPLE,
}


def seal(body: str) -> str:
    """Append 6304 + the correct CRC, bypassing build_emv's validation (for rejection tests)."""
    body += "6304"
    return body + f"{crc16_ccitt_false(body.encode('utf-8', 'surrogatepass')):04X}"


def tlv(field_id: str, value: str) -> str:
    return f"{field_id}{len(value):02d}{value}"


# A minimal valid body (no CRC): PFI, one merchant account template, MCC, currency, country,
# name, city. Rejection tests edit one object of it and re-seal, so only that defect shows.
PFI = "000201"
ACCOUNT = tlv("26", tlv("00", "com.example") + tlv("01", "12345"))
MCC = tlv("52", "5812")
CURRENCY = tlv("53", "986")
COUNTRY = tlv("58", "BR")
NAME = tlv("59", "CAFE")
CITY = tlv("60", "RIO")
BASE_PARTS = [PFI, ACCOUNT, MCC, CURRENCY, COUNTRY, NAME, CITY]


def body_with(*, drop: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> str:
    return "".join(p for p in BASE_PARTS if p not in drop) + "".join(extra)


# --- CRC ---------------------------------------------------------------------------------------


def test_crc16_ccitt_false_check_value() -> None:
    # Catalogue check value of CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740).
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_crc16_ccitt_false_empty_is_init_value() -> None:
    assert crc16_ccitt_false(b"") == 0xFFFF


def test_crc16_ccitt_false_accepts_bytearray_and_memoryview() -> None:
    assert crc16_ccitt_false(bytearray(b"123456789")) == 0x29B1
    assert crc16_ccitt_false(memoryview(b"123456789")) == 0x29B1


def test_crc16_ccitt_false_refuses_str_with_typed_error() -> None:
    with pytest.raises(EmvFormatError, match="needs bytes"):
        crc16_ccitt_false("123456789")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_published_sample_crc(name: str) -> None:
    text = SAMPLES[name]
    assert text[-8:-4] == "6304"
    assert crc16_ccitt_false(text[:-4].encode("utf-8")) == int(text[-4:], 16)


def test_emvco_sample_crc_is_a13a_over_utf8() -> None:
    assert EMVCO_SAMPLE.endswith("6304A13A")
    assert crc16_ccitt_false(EMVCO_SAMPLE[:-4].encode("utf-8")) == 0xA13A


# --- published samples parse -------------------------------------------------------------------


def test_parse_emvco_spec_sample() -> None:
    p = parse_emv(EMVCO_SAMPLE)
    assert list(p.fields) == [
        "00", "01", "29", "31", "52", "58", "59", "60", "64", "54", "53", "55", "62", "91", "63",
    ]  # fmt: skip
    assert p.fields["29"] == {"00": "D15600000000", "05": "A93FO3230Q"}
    assert p.fields["31"] == {"00": "D15600000001", "03": "12345678"}
    assert p.fields["64"] == {"00": "ZH", "01": "最佳运输", "02": "北京"}
    assert p.fields["62"] == {"03": "1234", "06": "***", "07": "A6008667", "09": "ME"}
    assert p.fields["91"] == {"00": "A011223344998877", "07": "12345678"}
    assert p.merchant_name == "BEST TRANSPORT"
    assert p.merchant_city == "BEIJING"
    assert p.country == "CN"
    assert p.mcc == "4111"
    assert p.currency == "156"
    assert p.amount == "23.72"
    assert p.point_of_initiation == "dynamic"
    assert p.crc == "A13A"
    assert p.crc_valid is True
    assert p.raw == EMVCO_SAMPLE
    assert set(p.merchant_accounts) == {"29", "31"}
    assert p.template("62") == {"03": "1234", "06": "***", "07": "A6008667", "09": "ME"}
    assert p.template("59") is None


def test_parse_pix_static_sample() -> None:
    p = parse_emv(PIX_STATIC_SAMPLE)
    assert p.fields["26"] == {
        "00": "br.gov.bcb.pix",
        "01": "123e4567-e12b-12d1-a456-426655440000",
    }
    assert (p.merchant_name, p.merchant_city, p.country) == ("Fulano de Tal", "BRASILIA", "BR")
    assert (p.mcc, p.currency, p.amount) == ("0000", "986", None)
    assert p.point_of_initiation is None
    assert p.fields["62"] == {"05": "***"}


def test_parse_pix_dynamic_sample() -> None:
    p = parse_emv(PIX_DYNAMIC_SAMPLE)
    assert p.point_of_initiation == "dynamic"
    assert p.fields["26"] == {
        "00": "br.gov.bcb.pix",
        "25": "pix.example.com/8b3da2f39a4140d1a91abd93113bd441",
    }


def test_parse_sgqr_paynow_sample() -> None:
    p = parse_emv(SGQR_PAYNOW_SAMPLE)
    assert p.point_of_initiation == "static"
    assert p.fields["26"] == {
        "00": "SG.PAYNOW",
        "01": "2",
        "02": "T04SS0129D",
        "03": "1",
        "05": "QS",
    }
    sgqr = p.template("51")
    assert sgqr is not None and sgqr["00"] == "SG.SGQR" and sgqr["02"] == "01.0001"
    assert (p.currency, p.country, p.merchant_name) == ("702", "SG", "LOVING HEART MULTI-SERVIC")


def test_parse_qris_sample() -> None:
    p = parse_emv(QRIS_SAMPLE)
    assert p.point_of_initiation == "static"
    assert p.fields["51"] == {"00": "ID.CO.QRIS.WWW", "02": "ID1021125405972", "03": "UMI"}
    assert (p.currency, p.fields["55"], p.fields["61"]) == ("360", "01", "65168")
    assert p.merchant_city == "KAB. MALANG"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_published_sample_rebuilds_byte_for_byte(name: str) -> None:
    text = SAMPLES[name]
    assert build_emv(parse_emv(text).fields) == text


def test_emv_to_json_nests_templates() -> None:
    doc = emv_to_json(parse_emv(PIX_STATIC_SAMPLE))
    assert doc == {
        "crc_valid": True,
        "fields": {
            "00": "01",
            "26": {"00": "br.gov.bcb.pix", "01": "123e4567-e12b-12d1-a456-426655440000"},
            "52": "0000",
            "53": "986",
            "58": "BR",
            "59": "Fulano de Tal",
            "60": "BRASILIA",
            "62": {"05": "***"},
            "63": "1D3D",
        },
    }
    assert type(doc["fields"]["26"]) is dict  # plain dict, json.dumps-able


def test_payload_is_immutable() -> None:
    p = parse_emv(PIX_STATIC_SAMPLE)
    with pytest.raises(AttributeError):
        p.raw = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.fields["59"] = "Mallory"  # type: ignore[index]
    tpl = p.fields["26"]
    assert isinstance(tpl, Mapping)
    with pytest.raises(TypeError):
        tpl["01"] = "attacker-key"  # type: ignore[index]
    assert p == parse_emv(PIX_STATIC_SAMPLE)
    assert hash(p) == hash(parse_emv(PIX_STATIC_SAMPLE))


def test_lowercase_crc_is_accepted() -> None:
    text = PIX_STATIC_SAMPLE[:-4] + PIX_STATIC_SAMPLE[-4:].lower()
    assert parse_emv(text).crc == "1d3d"


def test_looks_like_emv() -> None:
    assert looks_like_emv(EMVCO_SAMPLE)
    assert looks_like_emv("000201")
    assert not looks_like_emv("SC1:ABCDEF")
    assert not looks_like_emv("https://example.com/000201")
    assert not looks_like_emv(b"000201")
    assert not looks_like_emv("")


def test_is_template_id() -> None:
    assert [i for i in ("02", "25", "26", "51", "52", "62", "63", "64", "79", "80", "99")
            if is_template_id(i)] == ["26", "51", "62", "64", "80", "99"]  # fmt: skip


def test_minimal_valid_body_parses() -> None:
    p = parse_emv(seal(body_with()))
    assert p.merchant_name == "CAFE" and p.fields["26"] == {"00": "com.example", "01": "12345"}


def test_optional_fields_accepted() -> None:
    extra = (
        tlv("01", "11"), tlv("54", "1000"), tlv("55", "02"), tlv("56", "1.5"),
        tlv("61", "20000-000"),
        tlv("62", tlv("01", "INV-1")), tlv("64", tlv("00", "PT") + tlv("01", "CAFÉ")),
        tlv("80", tlv("00", "x.example") + tlv("01", "y")), tlv("70", "RFU kept"),
    )  # fmt: skip
    p = parse_emv(seal(body_with(extra=extra)))
    assert p.point_of_initiation == "static"
    assert p.amount == "1000"
    assert p.fields["64"] == {"00": "PT", "01": "CAFÉ"}
    assert p.fields["70"] == "RFU kept"


def test_primitive_merchant_account_02_25_is_enough() -> None:
    p = parse_emv(seal(body_with(drop=(ACCOUNT,), extra=(tlv("02", "4000123456789012"),))))
    assert p.merchant_accounts == {"02": "4000123456789012"}


# --- rejections: each kind its own test --------------------------------------------------------


def test_rejects_bad_crc_with_readable_message() -> None:
    bad = EMVCO_SAMPLE[:-4] + "A13B"
    with pytest.raises(EmvCrcError) as info:
        parse_emv(bad)
    assert str(info.value) == "CRC mismatch: payload says A13B, computed A13A"
    assert info.value.to_dict()["code"] == "emv_crc_error"


def test_rejects_altered_payee_through_crc() -> None:
    swapped = PIX_STATIC_SAMPLE.replace("Fulano de Tal", "Mallory de Ta")
    with pytest.raises(EmvCrcError, match="payload says 1D3D"):
        parse_emv(swapped)


def test_verify_crc_false_reports_invalid_crc_instead_of_raising() -> None:
    p = parse_emv(EMVCO_SAMPLE[:-4] + "0000", verify_crc=False)
    assert p.crc_valid is False
    assert emv_to_json(p)["crc_valid"] is False
    assert p.merchant_name == "BEST TRANSPORT"


def test_rejects_oversize_input_before_parsing() -> None:
    # 513 characters of garbage: refused for its size, not for its (broken) structure.
    with pytest.raises(EmvOversizeError, match="513 characters") as info:
        parse_emv("Z" * (MAX_PAYLOAD_CHARS + 1))
    assert isinstance(info.value, OversizeInput) and isinstance(info.value, EmvError)


def test_rejects_published_sgqr_label_over_512_characters() -> None:
    assert len(SGQR_OVERSIZE_SAMPLE) == 1042
    assert crc16_ccitt_false(SGQR_OVERSIZE_SAMPLE[:-4].encode()) == 0x317F
    with pytest.raises(EmvOversizeError):
        parse_emv(SGQR_OVERSIZE_SAMPLE)


def test_exactly_512_characters_is_accepted() -> None:
    body = body_with(extra=tuple(tlv(f"{i}", tlv("00", "X" * 95)) for i in range(80, 84)))
    body += tlv("61", "Y" * (MAX_PAYLOAD_CHARS - len(body) - 4 - 8))
    text = seal(body)
    assert len(text) == MAX_PAYLOAD_CHARS
    assert parse_emv(text).fields["83"] == {"00": "X" * 95}
    with pytest.raises(EmvOversizeError):
        parse_emv(text + "0")


def test_rejects_empty_input() -> None:
    with pytest.raises(EmvMissingField, match="empty"):
        parse_emv("")


def test_rejects_non_text_input() -> None:
    with pytest.raises(EmvFormatError, match="text"):
        parse_emv(b"000201")  # type: ignore[arg-type]


def test_rejects_non_digit_length() -> None:
    with pytest.raises(EmvLengthError, match="length '0A' of ID 00"):
        parse_emv("000A01" + PIX_STATIC_SAMPLE[6:])


def test_rejects_non_ascii_digit_length() -> None:
    # Arabic-Indic digits pass str.isdigit() and int(); they are not EMV lengths.
    with pytest.raises(EmvLengthError):
        parse_emv("00\u0660\u066201" + PIX_STATIC_SAMPLE[6:])


def test_rejects_non_digit_id() -> None:
    with pytest.raises(EmvFormatError, match="ID 'A0'"):
        parse_emv("A00201" + PIX_STATIC_SAMPLE[6:])


def test_rejects_length_running_past_end() -> None:
    with pytest.raises(EmvLengthError, match="declares 28 characters but only 0 remain"):
        parse_emv(EMVCO_SAMPLE[:50])


def test_rejects_truncated_id_and_length() -> None:
    with pytest.raises(EmvLengthError, match="only 2 left"):
        parse_emv("00020163")


def test_rejects_zero_length() -> None:
    with pytest.raises(EmvLengthError, match="length 00"):
        parse_emv(seal(body_with(extra=("6100",))))


def test_rejects_bad_length_inside_template() -> None:
    broken = "2615" + "0012com.example"  # sub-object 00 claims 12 characters, template has 11
    with pytest.raises(EmvLengthError, match="in template 26"):
        parse_emv(seal(body_with(drop=(ACCOUNT,), extra=(broken,))))


def test_rejects_duplicate_top_level_id() -> None:
    with pytest.raises(EmvDuplicateId, match="ID 59 appears twice"):
        parse_emv(seal(body_with(extra=(tlv("59", "EVIL"),))))


def test_rejects_duplicate_id_inside_template() -> None:
    twice = tlv("62", tlv("05", "A") + tlv("05", "B"))
    with pytest.raises(EmvDuplicateId, match="ID 05 appears twice in template 62"):
        parse_emv(seal(body_with(extra=(twice,))))


def test_rejects_crc_not_last() -> None:
    text = seal(body_with()) + tlv("61", "12345")
    with pytest.raises(EmvFormatError, match="must be the last"):
        parse_emv(text)


def test_rejects_crc_wrong_length() -> None:
    with pytest.raises(EmvLengthError, match="must have length 04, got 05"):
        parse_emv(body_with() + "6305A13A0")


def test_rejects_crc_not_hex() -> None:
    with pytest.raises(EmvFormatError, match="hexadecimal"):
        parse_emv(body_with() + "6304XYZW")


def test_rejects_missing_crc() -> None:
    with pytest.raises(EmvMissingField, match="CRC"):
        parse_emv(body_with())


def test_rejects_missing_payload_format_indicator() -> None:
    with pytest.raises(EmvMissingField, match="ID 00"):
        parse_emv(seal(body_with(drop=(PFI,))))


def test_rejects_payload_format_indicator_not_first() -> None:
    with pytest.raises(EmvFormatError, match="must be the first"):
        parse_emv(seal(ACCOUNT + body_with(drop=(ACCOUNT,))))


def test_rejects_wrong_payload_format_version() -> None:
    with pytest.raises(EmvFormatError, match="must be '01'"):
        parse_emv(seal("000202" + body_with(drop=(PFI,))))


def test_rejects_missing_merchant_account_information() -> None:
    with pytest.raises(EmvMissingField, match="02-51"):
        parse_emv(seal(body_with(drop=(ACCOUNT,))))


def test_rejects_merchant_account_template_without_gui() -> None:
    no_gui = tlv("27", tlv("01", "12345"))
    with pytest.raises(EmvMissingField, match="sub-ID 00"):
        parse_emv(seal(body_with(drop=(ACCOUNT,), extra=(no_gui,))))


@pytest.mark.parametrize(
    ("part", "field_id"),
    [(MCC, "52"), (CURRENCY, "53"), (COUNTRY, "58"), (NAME, "59"), (CITY, "60")],
)
def test_rejects_missing_mandatory_field(part: str, field_id: str) -> None:
    with pytest.raises(EmvMissingField, match=f"ID {field_id}"):
        parse_emv(seal(body_with(drop=(part,))))


@pytest.mark.parametrize("value", ["58A2", "581", "58121", "５８１２"])
def test_rejects_non_numeric_or_wrong_size_mcc(value: str) -> None:
    with pytest.raises(EmvFormatError, match="ID 52"):
        parse_emv(seal(body_with(drop=(MCC,), extra=(tlv("52", value),))))


@pytest.mark.parametrize("value", ["BRL", "98", "9860"])
def test_rejects_non_numeric_or_wrong_size_currency(value: str) -> None:
    with pytest.raises(EmvFormatError, match="ID 53"):
        parse_emv(seal(body_with(drop=(CURRENCY,), extra=(tlv("53", value),))))


@pytest.mark.parametrize("value", ["1,00", "1.0.0", ".", "-5", "1e3", "12345678901234", " 1"])
def test_rejects_badly_formatted_amount(value: str) -> None:
    with pytest.raises(EmvFormatError, match="ID 54"):
        parse_emv(seal(body_with(extra=(tlv("54", value),))))


@pytest.mark.parametrize("value", ["10", "0.5", "23.72", ".5", "1234567890.12"])
def test_accepts_well_formatted_amount(value: str) -> None:
    assert parse_emv(seal(body_with(extra=(tlv("54", value),)))).amount == value


def test_rejects_bad_point_of_initiation() -> None:
    with pytest.raises(EmvFormatError, match="ID 01"):
        parse_emv(seal(body_with(extra=(tlv("01", "13"),))))


def test_rejects_bad_tip_indicator() -> None:
    with pytest.raises(EmvFormatError, match="ID 55"):
        parse_emv(seal(body_with(extra=(tlv("55", "04"),))))


def test_rejects_fixed_fee_indicator_without_fee() -> None:
    with pytest.raises(EmvMissingField, match="ID 56"):
        parse_emv(seal(body_with(extra=(tlv("55", "02"),))))


def test_rejects_percentage_fee_without_indicator() -> None:
    with pytest.raises(EmvFormatError, match="ID 57"):
        parse_emv(seal(body_with(extra=(tlv("57", "5.00"),))))


def test_rejects_bad_percentage_fee() -> None:
    with pytest.raises(EmvFormatError, match="ID 57"):
        parse_emv(seal(body_with(extra=(tlv("55", "03"), tlv("57", "100.00")))))


def test_rejects_bad_country_code() -> None:
    with pytest.raises(EmvFormatError, match="ID 58"):
        parse_emv(seal(body_with(drop=(COUNTRY,), extra=(tlv("58", "b1"),))))


def test_rejects_language_template_without_alternate_name() -> None:
    with pytest.raises(EmvMissingField, match="sub-ID 01"):
        parse_emv(seal(body_with(extra=(tlv("64", tlv("00", "ZH")),))))


def test_rejects_text_that_is_not_unicode() -> None:
    # A lone surrogate cannot be UTF-8 encoded, so no CRC can be computed over it.
    with pytest.raises(EmvFormatError, match="not valid Unicode"):
        parse_emv(body_with(drop=(NAME,), extra=(tlv("59", "A\ud800"),)) + "6304ABCD")


# --- build -------------------------------------------------------------------------------------


def base_fields() -> dict[str, EmvFieldValue]:
    return {
        "00": "01",
        "01": "12",
        "26": {"00": "br.gov.bcb.pix", "01": "123e4567-e12b-12d1-a456-426655440000"},
        "52": "0000",
        "53": "986",
        "54": "10.00",
        "58": "BR",
        "59": "Fulano de Tal",
        "60": "BRASILIA",
        "62": {"05": "***"},
    }


def test_build_appends_correct_crc_and_parses() -> None:
    text = build_emv(base_fields())
    assert text.startswith("000201010212265800")
    assert text[-8:-4] == "6304"
    assert int(text[-4:], 16) == crc16_ccitt_false(text[:-4].encode())
    assert text[-4:] == text[-4:].upper()
    assert parse_emv(text).amount == "10.00"


def test_build_reproduces_pix_static_sample() -> None:
    fields = base_fields()
    del fields["01"], fields["54"]
    assert build_emv(fields) == PIX_STATIC_SAMPLE


def test_build_recomputes_a_given_crc() -> None:
    fields = base_fields()
    fields["63"] = "0000"
    assert build_emv(fields) == build_emv(base_fields())


def test_build_accepts_pre_encoded_template_string() -> None:
    fields = base_fields()
    fields["62"] = "0503***"
    assert build_emv(fields) == build_emv(base_fields())


def test_build_rejects_missing_mandatory_field() -> None:
    fields = base_fields()
    del fields["59"]
    with pytest.raises(EmvMissingField, match="ID 59"):
        build_emv(fields)


def test_build_rejects_value_over_99_characters() -> None:
    fields = base_fields()
    fields["59"] = "N" * 100
    with pytest.raises(EmvLengthError, match="100 characters"):
        build_emv(fields)


def test_build_rejects_empty_value() -> None:
    fields = base_fields()
    fields["62"] = {"05": ""}
    with pytest.raises(EmvLengthError, match="in template 62"):
        build_emv(fields)


def test_build_rejects_bad_id() -> None:
    with pytest.raises(EmvFormatError, match="'5'"):
        build_emv({**base_fields(), "5": "x"})


def test_build_rejects_mapping_for_primitive_id() -> None:
    with pytest.raises(EmvFormatError, match="not a template"):
        build_emv({**base_fields(), "59": {"00": "x"}})


def test_build_rejects_non_mapping() -> None:
    with pytest.raises(EmvFormatError, match="mapping"):
        build_emv([("00", "01")])  # type: ignore[arg-type]


def test_build_rejects_oversize_payload() -> None:
    fields = base_fields()
    for i in range(80, 86):
        fields[str(i)] = {"00": "G" * 95}
    with pytest.raises(EmvOversizeError, match="at most 512"):
        build_emv(fields)


# --- properties --------------------------------------------------------------------------------


def _never_escapes(text: str) -> None:
    try:
        result = parse_emv(text)
    except EmvError as exc:
        assert isinstance(exc, SafescanError)
        assert str(exc)  # a message, always
    else:
        assert isinstance(result, EmvPayload)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_property_arbitrary_text_only_raises_emv_errors(text: str) -> None:
    _never_escapes(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789ABCDEF.*é最\ud800 ", max_size=200))
def test_property_tlv_like_text_only_raises_emv_errors(tail: str) -> None:
    _never_escapes("000201" + tail)
    _never_escapes(seal("000201" + tail))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(SAMPLES.values())),
    st.integers(min_value=0, max_value=300),
    st.text(max_size=3),
    st.integers(min_value=0, max_value=3),
    st.booleans(),
)
def test_property_mutated_samples_only_raise_emv_errors(
    sample: str, at: int, insert: str, delete: int, reseal: bool
) -> None:
    at %= len(sample) - 8
    body = sample[:-8]
    body = body[:at] + insert + body[at + delete :]
    _never_escapes(seal(body) if reseal else body + sample[-8:])


# Printable-ish characters incl. Latin-1, Greek, CJK; surrogates (D800-DFFF) are above the range.
_value_chars = st.characters(codec="utf-8", min_codepoint=0x20, max_codepoint=0x9FFF)
_values = st.text(_value_chars, min_size=1, max_size=12)
_sub_ids = st.integers(min_value=0, max_value=99).map(lambda i: f"{i:02d}")


@st.composite
def _template(draw: st.DrawFn, need_gui: bool) -> dict[str, str]:
    items = draw(st.dictionaries(_sub_ids, _values, min_size=1, max_size=3))
    if need_gui:
        items = {"00": draw(_values), **{k: v for k, v in items.items() if k != "00"}}
    return items


@st.composite
def field_sets(draw: st.DrawFn) -> dict[str, EmvFieldValue]:
    fields: dict[str, EmvFieldValue] = {"00": "01"}
    poi = draw(st.sampled_from([None, "11", "12"]))
    if poi:
        fields["01"] = poi
    account_ids = draw(
        st.lists(st.integers(2, 51), min_size=1, max_size=3, unique=True).map(sorted)
    )
    for i in account_ids:
        fields[f"{i:02d}"] = draw(_template(True)) if i >= 26 else draw(_values)
    fields["52"] = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    fields["53"] = draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    if draw(st.booleans()):
        fields["54"] = draw(st.from_regex(r"[0-9]{1,10}(\.[0-9]{1,2})?", fullmatch=True))
    fields["58"] = draw(st.from_regex(r"[A-Z]{2}", fullmatch=True))
    fields["59"] = draw(_values)
    fields["60"] = draw(_values)
    if draw(st.booleans()):
        fields["61"] = draw(_values)
    if draw(st.booleans()):
        fields["62"] = draw(_template(False))
    if draw(st.booleans()):
        fields["64"] = {"00": draw(st.from_regex(r"[A-Z]{2}", fullmatch=True)), "01": draw(_values)}
    for i in draw(st.lists(st.integers(80, 99), max_size=2, unique=True).map(sorted)):
        fields[f"{i:02d}"] = draw(_template(False))
    return fields


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field_sets())
def test_property_build_parse_round_trip(fields: dict[str, EmvFieldValue]) -> None:
    text = build_emv(fields)
    assert len(text) <= MAX_PAYLOAD_CHARS
    parsed = parse_emv(text)
    expected = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in fields.items()}
    expected["63"] = text[-4:]
    assert emv_to_json(parsed) == {"crc_valid": True, "fields": expected}
    assert build_emv(parsed.fields) == text
