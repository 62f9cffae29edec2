"""Fuzz the EMVCo Merchant-Presented Mode parser (safescan.code.emv.parse_emv).

    .venv/bin/python fuzz/fuzz_emv.py -atheris_runs=100000
    .venv/bin/python fuzz/fuzz_emv.py -max_total_time=300 [CORPUS_DIR ...]

Input layout: ``data[0] % 6`` picks how the rest becomes text and whether the harness re-seals
it with the right CRC (a mutated payload almost never keeps a valid CRC-16, so without this the
fuzzer would stop at the CRC check and never reach the template split and the field rules):

 0  UTF-8 (errors replaced), parse_emv            3  UTF-8, CRC fixed by the harness
 1  UTF-8, parse_emv(verify_crc=False)            4  UTF-16-LE with lone surrogates, CRC fixed
 2  Latin-1, parse_emv                            5  UTF-16-LE with lone surrogates, parse_emv

Properties: only :class:`EmvError` subclasses escape; an accepted payload's accessors and
JSON view work; ``build_emv(parsed.fields)`` is accepted and, when the CRC is written in
uppercase and the CRC was valid, gives back exactly the input (as ``build_emv`` documents).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz._common import count, main
from safescan.code.emv import build_emv, crc16_ccitt_false, emv_to_json, parse_emv
from safescan.code.errors import SafescanError

OUTCOMES: Counter[str] = Counter()
TARGETS = 6

# Published samples (as in tests/code/test_emv.py): EMVCo worked example, PIX static and
# dynamic (Banco Central do Brasil), SGQR PayNow, QRIS.
SAMPLES = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A",
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D",
    "00020101021226700014br.gov.bcb.pix2548pix.example.com/8b3da2f39a4140d1a91abd93113bd441"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***630464E4",
    "00020101021126430009SG.PAYNOW010120210T04SS0129D030110502QS"
    "51810007SG.SGQR011221073031741D020701.000103066003160402010503279060400000708"
    "20210730520400005303702"
    "5802SG5925LOVING HEART MULTI-SERVIC6009Singapore6304A177",
    "00020101021126680016ID.CO.TELKOM.WWW011893600898026635207502150001952663520750303UMI"
    "51440014ID.CO.QRIS.WWW0215ID10211254059720303UMI5204549953033605502015802ID"
    "5906BIOLBE6011KAB. MALANG610565168622005091147938120703A03630404CB",
)


def _tlv(field_id: str, value: str) -> str:
    return f"{field_id}{len(value):02d}{value}"


_ACCOUNT = _tlv("26", _tlv("00", "com.example") + _tlv("01", "12345"))
_TAIL = _tlv("58", "BR") + _tlv("59", "CAFE") + _tlv("60", "RIO")
# Bodies without a CRC (sealed by seeds()): an amount with a tip indicator 02 and its fixed fee
# (56); indicator 03 with its percentage fee (57) and a language template (64); an unreserved
# template (80) and additional data (62).
BODIES = (
    "000201010212"
    + _ACCOUNT
    + "52045812"
    + "5303986"
    + _tlv("54", "10")
    + _tlv("55", "02")
    + _tlv("56", "1.50")
    + _TAIL,
    "000201010211"
    + _ACCOUNT
    + "52045812"
    + "5303986"
    + _tlv("55", "03")
    + _tlv("57", "2.5")
    + _TAIL
    + _tlv("64", _tlv("00", "PT") + _tlv("01", "CAFÉ")),
    "000201"
    + _ACCOUNT
    + "52045812"
    + "5303986"
    + _TAIL
    + _tlv("62", _tlv("05", "***"))
    + _tlv("80", _tlv("00", "com.other") + _tlv("01", "AB")),
)
TOKENS = tuple(
    t.encode()
    for t in (
        "000201",
        "010211",
        "010212",
        "6304",
        "5204",
        "5303",
        "5802",
        "5502",
        "5503",
        "5605",
        "5703",
        "6420",
        "0002",
        "0102",
        "62",
        "26",
        "51",
        "80",
        "99",
    )
)


def _with_crc(text: str) -> str:
    """``text`` with any trailing CRC object replaced by ``6304`` + the correct CRC."""
    body = text[:-8] if len(text) >= 8 and text[-8:-4] == "6304" else text
    body += "6304"
    return body + f"{crc16_ccitt_false(body.encode('utf-8', 'surrogatepass')):04X}"


def _text(mode: int, payload: bytes) -> str:
    if mode in (0, 1, 3):
        return payload.decode("utf-8", "replace")
    if mode == 2:
        return payload.decode("latin-1")
    return payload[: len(payload) // 2 * 2].decode("utf-16-le", "surrogatepass")


def _target(mode: int, payload: bytes) -> None:
    text = _text(mode, payload)
    if mode in (3, 4):
        text = _with_crc(text)
    parsed = parse_emv(text, verify_crc=mode != 1)
    view = emv_to_json(parsed)
    assert set(view["fields"]) == set(parsed.fields)
    for name in ("merchant_name", "merchant_city", "country", "mcc", "currency", "amount", "crc"):
        getattr(parsed, name)
    _ = parsed.point_of_initiation, parsed.merchant_accounts, parsed.template("62")
    rebuilt = build_emv(parsed.fields)
    again = parse_emv(rebuilt)
    same = {k: v for k, v in again.fields.items() if k != "63"}
    assert same == {k: v for k, v in parsed.fields.items() if k != "63"}, (text, rebuilt)
    if parsed.crc_valid and parsed.crc == parsed.crc.upper():
        assert rebuilt == text, (text, rebuilt)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the atheris / libFuzzer name)
    """One fuzz input; raises only on a crash (an untyped exception or a broken property)."""
    if not data:
        return
    try:
        _target(data[0] % TARGETS, data[1:])
    except SafescanError as exc:
        count(OUTCOMES, exc)
    else:
        count(OUTCOMES, None)


def seeds() -> list[bytes]:
    """Each published sample in every text mode."""
    out = []
    for sample in (*SAMPLES, *(_with_crc(body) for body in BODIES)):
        for mode in range(TARGETS):
            if mode in (4, 5):
                raw = sample.encode("utf-16-le")
            elif mode == 2:
                raw = sample.encode("utf-8")  # read back as Latin-1: multi-byte names break
            else:
                raw = sample.encode("utf-8")
            out.append(bytes([mode]) + raw)
    return out


if __name__ == "__main__":
    main(TestOneInput, seeds(), TOKENS, OUTCOMES)
