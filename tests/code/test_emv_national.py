"""Real-world EMVCo codes of national schemes, read the way wallets read them.

National schemes' codes often break the EMVCo book's "mandatory" rules (Thai PromptPay
person-to-person codes carry no merchant category code, name or city; Malaysia's DuitNow uses
payload format "02"), and wallets still read them. ``safescan code inspect`` must show every
field, report the CRC alone in ``crc_valid``, list the deviations as warnings, and fail (exit 2)
only for a broken TLV or a wrong CRC.

Codes marked *published* are copied from the scheme's (or a reference implementation's)
documentation, CRC included: they check our CRC against someone else's. The others are built
here from the public specifications (field by field, see each comment) and sealed with the
CRC.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safescan.code.emv import crc16_ccitt_false, looks_like_emv, parse_emv, read_emv
from safescan.code.errors import EmvFormatError
from safescan.code.inspect import inspect_text
from tests.code.test_emv import (
    PIX_DYNAMIC_SAMPLE,
    PIX_STATIC_SAMPLE,
    QRIS_SAMPLE,
    SGQR_PAYNOW_SAMPLE,
)


def tlv(field_id: str, value: str) -> str:
    return f"{field_id}{len(value):02d}{value}"


def seal(*parts: str) -> str:
    body = "".join(parts) + "6304"
    return body + f"{crc16_ccitt_false(body.encode('utf-8')):04X}"


# --- Thailand: PromptPay (Bank of Thailand / Thai Bankers' Association "Thai QR Payment") ----

# Person-to-person credit transfer to a mobile number (template 29, AID A000000677010111, sub-ID
# 01 = 0066 + the number without its leading 0), 50.00 THB. No MCC, name or city: real
# PromptPay codes look exactly like this.
PROMPTPAY_MOBILE = seal(
    "000201",
    "010212",
    tlv("29", tlv("00", "A000000677010111") + tlv("01", "0066812345678")),
    tlv("53", "764"),
    tlv("54", "50.00"),
    tlv("58", "TH"),
)
# Published: credit transfer to bank account 1234567890 at bank 014, 100.00 THB (the example in
# the thai-qr-payment payload guide, CRC 901D).
PROMPTPAY_BANK_ACCOUNT = (
    "00020101021229370016A0000006770101110413014123456789053037645406100.005802TH6304901D"
)
# Bill payment (template 30, AID A000000677010112: biller id = tax id + suffix, reference 1
# and 2), with a merchant name but no MCC or city.
PROMPTPAY_BILL = seal(
    "000201",
    "010212",
    tlv(
        "30",
        tlv("00", "A000000677010112")
        + tlv("01", "010753600031508")
        + tlv("02", "CUSTOMER001")
        + tlv("03", "INV2024"),
    ),
    tlv("53", "764"),
    tlv("54", "1250.00"),
    tlv("58", "TH"),
    tlv("59", "SIAM ELECTRIC"),
    tlv("62", tlv("07", "T0001")),
)

# --- India: Bharat QR (NPCI, with the card networks) carrying UPI --------------------------------

# Card network IDs 02 (Visa), 04 (Mastercard), 06 (RuPay), 08 (IFSC + account); template 26
# for UPI (RID A000000524, the merchant's VPA), template 27 (transaction reference); INR (356),
# postal code 61, additional data 62 (terminal label).
BHARAT_QR_UPI = seal(
    "000201",
    "010212",
    tlv("02", "4075930000001057"),
    tlv("04", "5199800000012149"),
    tlv("06", "6100530000001042"),
    tlv("08", "YESB0000078007861100000033"),
    tlv("26", tlv("00", "A000000524") + tlv("01", "sharmastore@yesbank")),
    tlv("27", tlv("00", "A000000524") + tlv("01", "TXN0000000042")),
    tlv("52", "5411"),
    tlv("53", "356"),
    tlv("54", "250.00"),
    tlv("58", "IN"),
    tlv("59", "SHARMA GENERAL STORE"),
    tlv("60", "MUMBAI"),
    tlv("61", "400051"),
    tlv("62", tlv("07", "T0001")),
)

# --- Singapore: PayNow inside SGQR -------------------------------------------------------------

# Template 26 SG.PAYNOW: proxy type 2 (UEN), the UEN, amount not editable (0), expiry date;
# a dynamic code with a bill number in 62.
PAYNOW_DYNAMIC = seal(
    "000201",
    "010212",
    tlv(
        "26",
        tlv("00", "SG.PAYNOW")
        + tlv("01", "2")
        + tlv("02", "201403121W")
        + tlv("03", "0")
        + tlv("04", "20301231"),
    ),
    tlv("52", "0000"),
    tlv("53", "702"),
    tlv("54", "12.50"),
    tlv("58", "SG"),
    tlv("59", "KOPI CORNER PTE LTD"),
    tlv("60", "Singapore"),
    tlv("62", tlv("01", "INV-0042")),
)

# --- Malaysia: DuitNow QR (PayNet, "DuitNow National QR Code Standard" v1.5) -------------------

# Published: example 1 (retail POS, Affin Bank acquirer, 10.00 MYR, CRC 343F) and example 2
# (person to person, MCC 0000, CRC 3A23). Payload format indicator "02", not the book's "01".
DUITNOW_RETAIL = (
    "00020201021126410014A000000615000101065016640209123456789520499995303458"
    "540510.005802MY5909QRCSDNBHD6005BANGI6304343F"
)
DUITNOW_P2P = (
    "00020201021126410014A000000615000101065016640209123456789520400005303458"
    "540510.005802MY5909AUSERNAME6005BANGI63043A23"
)

# --- Brazil: Pix (Banco Central do Brasil, "Manual de Padroes para Iniciacao do Pix") ----------

# Static Pix with an e-mail key, a description (26-02), an amount and a txid in 62-05; no
# point-of-initiation method (optional in the BR Code).
PIX_WITH_AMOUNT = seal(
    "000201",
    tlv(
        "26", tlv("00", "br.gov.bcb.pix") + tlv("01", "fulano@example.com") + tlv("02", "Pedido 42")
    ),
    tlv("52", "0000"),
    tlv("53", "986"),
    tlv("54", "15.90"),
    tlv("58", "BR"),
    tlv("59", "Loja Exemplo"),
    tlv("60", "SAO PAULO"),
    tlv("62", tlv("05", "PEDIDO42")),
)

# --- Indonesia: QRIS (Bank Indonesia / ASPI) ----------------------------------------------------

# Dynamic QRIS: PJSP template 26 (national merchant id), QRIS template 51, a fixed convenience
# fee (55 = 02, 56), IDR without decimals, postal code.
QRIS_DYNAMIC = seal(
    "000201",
    "010212",
    tlv(
        "26",
        tlv("00", "ID.CO.BANKMANDIRI.WWW")
        + tlv("01", "936000080000012345")
        + tlv("02", "000012345")
        + tlv("03", "UMI"),
    ),
    tlv("51", tlv("00", "ID.CO.QRIS.WWW") + tlv("02", "ID1020012345678") + tlv("03", "UMI")),
    tlv("52", "5812"),
    tlv("53", "360"),
    tlv("54", "50000"),
    tlv("55", "02"),
    tlv("56", "1000"),
    tlv("58", "ID"),
    tlv("59", "WARUNG SARI"),
    tlv("60", "JAKARTA"),
    tlv("61", "10110"),
    tlv("62", tlv("07", "K01")),
)

NO_52_59_60 = [
    "mandatory ID 52 (merchant category code) is missing",
    "mandatory ID 59 (merchant name) is missing",
    "mandatory ID 60 (merchant city) is missing",
]
PFI_02 = ["payload format indicator (ID 00) must be '01', got '02'"]

# name -> (payload, expected warnings, expected summary subset)
NATIONAL: dict[str, tuple[str, list[str], dict[str, object]]] = {
    "promptpay_mobile": (
        PROMPTPAY_MOBILE,
        NO_52_59_60,
        {"country": "TH", "amount_display": "50.00 THB", "schemes": ["A000000677010111"]},
    ),
    "promptpay_bank_account": (
        PROMPTPAY_BANK_ACCOUNT,
        NO_52_59_60,
        {"amount": "100.00", "currency": "THB", "point_of_initiation": "dynamic"},
    ),
    "promptpay_bill": (
        PROMPTPAY_BILL,
        [NO_52_59_60[0], NO_52_59_60[2]],
        {"merchant_name": "SIAM ELECTRIC", "amount_display": "1250.00 THB"},
    ),
    "bharat_qr_upi": (
        BHARAT_QR_UPI,
        [],
        {
            "merchant_name": "SHARMA GENERAL STORE",
            "merchant_city": "MUMBAI",
            "amount_display": "250.00 INR",
            "mcc": "5411",
            "schemes": ["A000000524", "A000000524"],
        },
    ),
    "paynow_dynamic": (
        PAYNOW_DYNAMIC,
        [],
        {"merchant_name": "KOPI CORNER PTE LTD", "amount_display": "12.50 SGD"},
    ),
    "sgqr_paynow_published": (
        SGQR_PAYNOW_SAMPLE,
        [],
        {"merchant_city": "Singapore", "currency": "SGD", "schemes": ["SG.PAYNOW", "SG.SGQR"]},
    ),
    "duitnow_retail": (
        DUITNOW_RETAIL,
        PFI_02,
        {
            "merchant_name": "QRCSDNBHD",
            "merchant_city": "BANGI",
            "amount_display": "10.00 MYR",
            "point_of_initiation": "static",
        },
    ),
    "duitnow_p2p": (DUITNOW_P2P, PFI_02, {"merchant_name": "AUSERNAME", "mcc": "0000"}),
    "pix_static_published": (
        PIX_STATIC_SAMPLE,
        [],
        {"merchant_name": "Fulano de Tal", "currency": "BRL", "schemes": ["br.gov.bcb.pix"]},
    ),
    "pix_dynamic_published": (PIX_DYNAMIC_SAMPLE, [], {"merchant_city": "BRASILIA"}),
    "pix_with_amount": (PIX_WITH_AMOUNT, [], {"amount_display": "15.90 BRL"}),
    "qris_published": (
        QRIS_SAMPLE,
        [],
        {"merchant_city": "KAB. MALANG", "currency": "IDR", "country": "ID"},
    ),
    "qris_dynamic": (
        QRIS_DYNAMIC,
        [],
        {"merchant_name": "WARUNG SARI", "amount_display": "50000 IDR"},
    ),
}


def run_inspect(*args: str) -> tuple[int, dict[str, object], str]:
    out = subprocess.run(
        [sys.executable, "-m", "safescan", "code", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc = json.loads(out.stdout) if "--json" in args else {}
    return out.returncode, doc, out.stdout


@pytest.mark.parametrize("name", sorted(NATIONAL))
def test_national_code_is_read_with_its_deviations_as_warnings(name: str) -> None:
    text, warnings, summary = NATIONAL[name]
    doc = inspect_text(text, now=0)
    assert doc["kind"] == "emv" and doc["verified"] is False
    assert doc["valid"] is True and doc["crc_valid"] is True and "error" not in doc
    assert doc["warnings"] == warnings
    for key, value in summary.items():
        assert doc["summary"][key] == value, key
    assert doc["fields"]["63"] == text[-4:]


def test_every_field_is_shown_with_templates_as_nested_objects() -> None:
    doc = inspect_text(BHARAT_QR_UPI, now=0)
    assert list(doc["fields"]) == [
        "00", "01", "02", "04", "06", "08", "26", "27", "52", "53", "54", "58", "59", "60",
        "61", "62", "63",
    ]  # fmt: skip
    assert doc["fields"]["26"] == {"00": "A000000524", "01": "sharmastore@yesbank"}
    assert doc["fields"]["08"] == "YESB0000078007861100000033"
    assert doc["fields"]["62"] == {"07": "T0001"}


@pytest.mark.parametrize("name", ["promptpay_mobile", "duitnow_retail", "qris_dynamic"])
def test_cli_inspect_json_exit_0_with_warnings(name: str) -> None:
    text, warnings, _ = NATIONAL[name]
    code, doc, _ = run_inspect(text, "--json")
    assert code == 0
    assert doc["valid"] is True and doc["crc_valid"] is True and doc["warnings"] == warnings


def test_cli_inspect_text_lists_summary_fields_and_deviations() -> None:
    code, _, out = run_inspect(PROMPTPAY_MOBILE)
    assert code == 0
    assert "UNVERIFIED" in out and "50.00 THB" in out and "0066812345678" in out
    assert "deviation" in out and "merchant name (ID 59)" not in out
    assert "ID 59 (merchant name) is missing" in out


# --- the strict parser still refuses them (build_emv and the book's rules) ---------------------


@pytest.mark.parametrize("name", ["promptpay_mobile", "duitnow_retail"])
def test_strict_parser_still_refuses_deviations(name: str) -> None:
    with pytest.raises(Exception, match=r"missing|must be"):
        parse_emv(NATIONAL[name][0])


def test_duitnow_payload_format_02_is_sniffed_as_emv() -> None:
    assert looks_like_emv(DUITNOW_RETAIL)
    assert not looks_like_emv("0002AB")


# --- errors: only a broken TLV or a wrong CRC ---------------------------------------------------


def _flip(text: str, index: int) -> str:
    ch = text[index]
    new = "1" if ch == "0" else "0" if ch.isdigit() else ("B" if ch != "B" else "C")
    return text[:index] + new + text[index + 1 :]


@pytest.mark.parametrize("name", sorted(NATIONAL))
@pytest.mark.parametrize("where", ["amount_or_name", "account", "crc"])
def test_altered_national_code_fails_on_its_crc(name: str, where: str) -> None:
    text = NATIONAL[name][0]
    if where == "crc":
        index = len(text) - 1
    elif where == "account":
        index = text.index("00", 8) + 6  # inside the first merchant account template's value
    else:
        marker = "54" if "54" in read_emv(text)[0].fields else "59"
        value = str(read_emv(text)[0].fields.get(marker, ""))
        index = text.index(marker + f"{len(value):02d}" + value) + 4
    altered = _flip(text, index)
    assert altered != text
    doc = inspect_text(altered, now=0)
    assert doc["crc_valid"] is False and doc["valid"] is False
    assert doc["error"]["type"] in {"EmvCrcError", "EmvLengthError", "EmvFormatError"}
    if doc["error"]["type"] == "EmvCrcError":
        assert "fields" in doc  # what the altered code claims is still shown


def test_cli_wrong_crc_exits_2_and_still_shows_fields() -> None:
    altered = DUITNOW_RETAIL[:-4] + "0000"
    code, doc, _ = run_inspect(altered, "--json")
    assert code == 2
    assert doc["valid"] is False and doc["crc_valid"] is False
    assert doc["error"]["type"] == "EmvCrcError"
    assert doc["fields"]["59"] == "QRCSDNBHD" and doc["warnings"] == PFI_02


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            "000201" + tlv("29", tlv("00", "A000000677010111")) + "5303764" + "5303764",
            "EmvDuplicateId",
        ),
        ("000201" + "2A04TEST" + "5303764", "EmvFormatError"),
        ("000201" + "2999" + "0016A000000677010111", "EmvLengthError"),
        ("000201" + "2900" + "5303764", "EmvLengthError"),
        ("0002" + "5303764", "EmvLengthError"),
    ],
)
def test_broken_tlv_is_an_error_but_crc_valid_reports_the_crc_alone(body: str, error: str) -> None:
    text = seal(body)  # the CRC is right: only the TLV is broken
    doc = inspect_text(text, now=0)
    assert doc["valid"] is False and doc["error"]["type"] == error
    assert doc["crc_valid"] is True
    code, cli_doc, _ = run_inspect(text, "--json") if error == "EmvDuplicateId" else (2, doc, "")
    assert code == 2 and cli_doc["crc_valid"] is True


def test_missing_crc_object_is_an_error() -> None:
    text = "000201" + tlv("29", tlv("00", "A000000677010111")) + "5303764"
    doc = inspect_text(text, now=0)
    assert doc["valid"] is False and doc["crc_valid"] is False
    assert doc["error"]["type"] == "EmvMissingField"


# --- more deviations: all warnings, never errors -----------------------------------------------


def test_template_that_does_not_split_is_shown_as_text_with_a_warning() -> None:
    text = seal("000201", tlv("29", "not tlv at all"), "5303764", "5802TH")
    doc = inspect_text(text, now=0)
    assert doc["valid"] is True and doc["fields"]["29"] == "not tlv at all"
    assert any("ID 29 (merchant account information) should hold data objects" in w
               for w in doc["warnings"])  # fmt: skip


def test_soft_deviations_lengths_decimals_currency_guid() -> None:
    text = seal(
        "000201",
        tlv("30", tlv("01", "010753600031508")),  # no GUID
        "52045411",
        "5303999",  # not a currency
        tlv("54", "1.234"),
        "5802th",  # lowercase country
        tlv("59", "A VERY LONG MERCHANT NAME THAT OVERFLOWS"),
        tlv("60", "A CITY NAME TOO LONG"),
    )
    doc = inspect_text(text, now=0)
    assert doc["valid"] is True and doc["crc_valid"] is True
    warnings = doc["warnings"]
    assert (
        "ID 30 (merchant account information) lacks its globally unique identifier"
        " (sub-ID 00)" in warnings
    )
    assert "country code (ID 58) must be 2 letters A-Z, got 'th'" in warnings
    assert "ID 59 (merchant name) has 40 characters; EMVCo allows 25" in warnings
    assert "ID 60 (merchant city) has 20 characters; EMVCo allows 15" in warnings
    assert "transaction currency (ID 53) '999' is not an ISO 4217 currency" in warnings
    assert doc["summary"]["currency"] == "999"


def test_amount_with_more_decimals_than_the_currency() -> None:
    text = seal("000201", tlv("29", tlv("00", "A000000677010111")), "5303764",
                tlv("54", "5.125"), "5802TH")  # fmt: skip
    assert "transaction amount (ID 54) '5.125' has 3 decimals; THB has 2" in read_emv(text)[1]


def test_upi_intent_link_is_a_link_not_a_payment_code() -> None:
    doc = inspect_text("upi://pay?pa=sharmastore@yesbank&pn=Sharma&am=250.00&cu=INR", now=0)
    assert doc["kind"] == "unknown" and doc["looks_like"] == "url"


def test_read_emv_still_refuses_oversize_and_non_text() -> None:
    with pytest.raises(EmvFormatError):
        read_emv(b"000201")  # type: ignore[arg-type]
    doc = inspect_text("000201" + "9" * 600, now=0)
    assert doc["valid"] is False and doc["error"]["type"] == "EmvOversizeError"


def test_mistyped_image_path_is_file_not_found(tmp_path: Path) -> None:
    for arg in ("o1.pgn", str(tmp_path / "nope" / "code.png"), "./code", "~/missing-code.png"):
        code, doc, _ = run_inspect(arg, "--json")
        assert code == 2, arg
        assert doc["error"]["type"] == "InputNotFound", arg
        assert doc["error"]["message"].startswith("file not found"), arg
    code, doc, _ = run_inspect("hello world", "--json")
    assert doc["error"]["type"] == "NotAPaymentCode"
    code, doc, _ = run_inspect("www.example.com", "--json")
    assert doc["error"]["type"] == "NotAPaymentCode" and doc["looks_like"] == "url"


def test_text_file_holding_a_code_is_read(tmp_path: Path) -> None:
    f = tmp_path / "code.txt"
    f.write_text(DUITNOW_RETAIL + "\n")
    code, doc, _ = run_inspect(str(f), "--json")
    assert code == 0 and doc["summary"]["merchant_name"] == "QRCSDNBHD"
    big = tmp_path / "big.txt"
    big.write_bytes(b"0" * 70_000)
    code, doc, _ = run_inspect(str(big), "--json")
    assert code == 2 and doc["error"]["type"] == "InputUnreadable"
