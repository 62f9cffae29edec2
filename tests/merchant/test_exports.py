"""The back office's settlement exports: camt.053.001.08 valid against ISO 20022's published
schema (the XSD the Standards Editor generated, vendored with its provenance), its sums and
balances right; CSV cells that a spreadsheet would run stay text (CSV injection)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from safescan.merchant import exports
from safescan.merchant.exports import CAMT_NS, ExportError, day_bounds, day_entries

XSD = Path(__file__).resolve().parent / "vendor" / "iso20022" / "camt.053.001.08.xsd"
DAY = "2026-11-30"
START, _END = day_bounds(DAY)
NS = {"c": CAMT_NS}
EVIL = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x")']


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def _paid(n: int, amount: int, name: str = "Tea", currency: int = 978) -> dict[str, object]:
    return {
        "order_id": f"ORDER{n:07d}",
        "payment_id": f"pa_{n:016d}",
        "paid_at": START + 3600 * (n % 24) + n,
        "paid_amount": amount,
        "total": amount,
        "currency": currency,
        "reference": "table 4" if n % 2 else None,
        "items": [[name, 1, amount]],
    }


def _refund(n: int, amount: int, reason: str | None = "cold") -> dict[str, object]:
    return {
        "refund_id": f"re_{n:016d}",
        "order_id": f"ORDER{n:07d}",
        "amount": amount,
        "currency": 978,
        "reason": reason,
        "created_at": START + 3600 * 20 + n,
    }


def _camt(entries: list[exports.Entry], account: str = "FR7630006000011234567890189") -> bytes:
    return exports.to_camt053(
        entries,
        day=DAY,
        merchant_id="M1234567890",
        merchant_name='Café <Ünïcode> & "Co"',
        account=account,
        currency=978,
        created=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("paid", "refunds", "elsewhere", "account"),
    [
        ([], [], {}, "FR7630006000011234567890189"),  # a day without sales
        ([_paid(i, 100 + i) for i in range(1, 30)], [_refund(3, 50)], {}, "not an IBAN"),
        ([_paid(1, 1000)], [_refund(1, 400), _refund(2, 600, None)], {978: 250}, ""),
        ([_paid(5, 300, EVIL[0])], [_refund(5, 300, "x" * 200)], {}, "DE89370400440532013000"),
        ([_paid(7, 999_999_99)], [_refund(7, 1_000_000_00)], {}, "GB29NWBK60161331926819"),
    ],
)
def test_camt053_validates_against_the_iso20022_schema(
    schema: etree.XMLSchema,
    paid: list[dict[str, object]],
    refunds: list[dict[str, object]],
    elsewhere: dict[int, int],
    account: str,
) -> None:
    entries = day_entries(paid, refunds, elsewhere)  # type: ignore[arg-type]
    xml = _camt(entries, account)
    doc = etree.fromstring(xml)
    assert schema.validate(doc), schema.error_log
    credits = sum(int(p["paid_amount"]) for p in paid)  # type: ignore[call-overload]
    debits = sum(int(r["amount"]) for r in refunds) + sum(elsewhere.values())  # type: ignore[call-overload]
    ntries = doc.findall(".//c:Ntry", NS)
    assert len(ntries) == len(paid) + len(refunds) + len([v for v in elsewhere.values() if v])
    [close] = doc.xpath(".//c:Bal[c:Tp/c:CdOrPrtry/c:Cd='CLBD']", namespaces=NS)
    amount = close.find("c:Amt", NS)
    assert amount is not None and amount.get("Ccy") == "EUR"
    assert round(float(amount.text or "0") * 100) == abs(credits - debits)
    sign = close.findtext("c:CdtDbtInd", namespaces=NS)
    assert sign == ("DBIT" if credits < debits else "CRDT")


def test_a_broken_statement_fails_the_schema(schema: etree.XMLSchema) -> None:
    """The validation can fail: the same statement with a field out of its type is refused."""
    xml = _camt(day_entries([_paid(1, 100)], [], {}))
    for broken in (
        xml.replace(b"<Cd>BOOK</Cd>", b"<Cd>BOOKED</Cd>"),  # ExternalEntryStatus1Code: 4 chars
        xml.replace(b"CRDT</CdtDbtInd>", b"CREDIT</CdtDbtInd>", 1),
        xml.replace(b"<MsgId>", b"<MsgIdentification>").replace(
            b"</MsgId>", b"</MsgIdentification>"
        ),
    ):
        assert not schema.validate(etree.fromstring(broken))


def test_text_in_the_statement_is_data_not_markup(schema: etree.XMLSchema) -> None:
    paid = [_paid(1, 100, "<Ntry><Amt Ccy='EUR'>9999</Amt></Ntry>&amp;")]
    xml = _camt(day_entries(paid, [], {}))
    doc = etree.fromstring(xml)
    assert schema.validate(doc)
    assert len(doc.findall(".//c:Ntry", NS)) == 1
    assert "<Ntry>" in (doc.findtext(".//c:Ustrd", namespaces=NS) or "")


@pytest.mark.parametrize("evil", EVIL)
def test_csv_cells_never_run_as_formulas(evil: str) -> None:
    paid = [{**_paid(1, 100, evil), "reference": evil}]
    text = exports.to_csv(day_entries(paid, [_refund(1, 40, evil)], {}))  # type: ignore[list-item]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    for row in rows:
        for value in row.values():
            assert value[:1] not in ("=", "+", "-", "@", "\t", "\r"), row
    assert rows[0]["reference"] == "'" + evil
    assert rows[1]["reason"] == "'" + evil
    assert rows[0]["amount"] == "1.00" and rows[1]["amount"] == "0.40"


@pytest.mark.parametrize(
    "day", ["", "2026-13-01", "2026-02-30", "30-11-2026", "2026-11-30T00:00", "2026-1-1", "x" * 99]
)
def test_bad_days_are_refused(day: str) -> None:
    with pytest.raises(ExportError):
        day_bounds(day)
