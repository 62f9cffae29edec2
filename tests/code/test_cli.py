"""The `safescan keys` / `safescan code` commands, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.code.test_emv import EMVCO_SAMPLE

SAFESCAN = [sys.executable, "-m", "safescan"]


def run(
    *args: str, cwd: Path, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAFESCAN_PASSPHRASE": "correct horse", **(env_extra or {})}
    return subprocess.run(
        [*SAFESCAN, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    assert run("keys", "init", "kd", cwd=d).returncode == 0
    order = {
        "merchant": {
            "id": "m_1",
            "name": "Bäckerei Müller",
            "city": "Berlin",
            "country": "DE",
            "mcc": 5462,
        },
        "currency": "EUR",
        "items": [
            {"name": "Brezel", "quantity": 3, "unit_price": 95},
            {"name": "Kaffee", "quantity": 1, "unit_price": 280},
        ],
    }
    (d / "order.json").write_text(json.dumps(order))
    r = run("code", "make", "order.json", "--keys", "kd", "--out", "out/c1", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "QR version" in r.stdout
    return d


def test_key_files_are_encrypted_and_private(made: Path) -> None:
    for f in (made / "kd").glob("*.key"):
        assert f.stat().st_mode & 0o077 == 0
        assert b"ENCRYPTED PRIVATE KEY" in f.read_bytes()


def test_make_writes_text_png_svg(made: Path) -> None:
    text = (made / "out/c1.txt").read_text().strip()
    assert text.startswith("SS1:")
    assert (made / "out/c1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (made / "out/c1.svg").read_text()


def test_inspect_image_without_keys_shows_header_only(made: Path) -> None:
    r = run("code", "inspect", "out/c1.png", "--json", cwd=made)
    doc = json.loads(r.stdout)
    assert r.returncode == 0
    assert doc["kind"] == "safescan" and doc["valid"] is True and doc["verified"] is False
    assert "Brezel" not in r.stdout and "Müller" not in r.stdout


def test_inspect_with_keys_shows_verified_contents(made: Path) -> None:
    r = run("code", "inspect", "out/c1.png", "--key", "kd", "--json", cwd=made)
    doc = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert doc["verified"] is True
    assert doc["contents"]["merchant"]["name"] == "Bäckerei Müller"
    assert doc["contents"]["total"] == 565


def test_inspect_with_wrong_passphrase_is_a_clear_error(made: Path) -> None:
    r = run(
        "code",
        "inspect",
        "out/c1.txt",
        "--key",
        "kd",
        "--json",
        cwd=made,
        env_extra={"SAFESCAN_PASSPHRASE": "wrong"},
    )
    doc = json.loads(r.stdout)
    assert r.returncode == 2
    assert doc["error"]["type"] == "KeyFileError"
    assert "passphrase" in doc["error"]["message"]


def test_inspect_tampered_text_is_refused(made: Path) -> None:
    text = (made / "out/c1.txt").read_text().strip()
    tampered = text[:50] + ("0" if text[50] != "0" else "1") + text[51:]
    r = run("code", "inspect", tampered, "--key", "kd", "--json", cwd=made)
    doc = json.loads(r.stdout)
    assert r.returncode == 2
    assert doc["valid"] is False
    assert doc["error"]["type"] in {"DecryptionFailed", "MalformedCode"}


def test_inspect_emv_is_labelled_unverified(made: Path) -> None:
    r = run("code", "inspect", EMVCO_SAMPLE, "--json", cwd=made)
    doc = json.loads(r.stdout)
    assert r.returncode == 0
    assert doc["kind"] == "emv" and doc["crc_valid"] is True and doc["verified"] is False
    assert doc["fields"]["59"] == "BEST TRANSPORT"
    assert doc["fields"]["64"]["00"] == "ZH"


def test_inspect_emv_bad_crc(made: Path) -> None:
    r = run("code", "inspect", EMVCO_SAMPLE[:-4] + "0000", "--json", cwd=made)
    doc = json.loads(r.stdout)
    assert r.returncode == 2
    assert doc["kind"] == "emv" and doc["crc_valid"] is False and doc["valid"] is False


@pytest.mark.parametrize("text", ["https://pay.example.com/x?amount=5", "hello world"])
def test_inspect_other_text_is_not_a_payment_code(made: Path, text: str) -> None:
    r = run("code", "inspect", text, "--json", cwd=made)
    doc = json.loads(r.stdout)
    assert r.returncode == 2
    assert doc["kind"] == "unknown" and doc["valid"] is False
    assert doc["error"]["type"] == "NotAPaymentCode"


def test_certify_and_show(made: Path) -> None:
    pk = "11" * 32
    r = run(
        "keys",
        "certify",
        "--keys",
        "kd",
        "--role",
        "merchant",
        "--subject",
        "m_1",
        "--public-key",
        pk,
        "--serial",
        "42",
        "--out",
        "m1.cert",
        "--name",
        "Bäckerei Müller",
        "--city",
        "Köln",
        "--country",
        "DE",
        "--mcc",
        "5462",
        cwd=made,
    )
    assert r.returncode == 0, r.stderr
    shown = run("keys", "show", "m1.cert", cwd=made)
    assert "42" in shown.stdout and "merchant" in shown.stdout and pk in shown.stdout
    for shown_field in ("Bäckerei Müller", "Köln", "DE", "5462", "version: 2"):
        assert shown_field in shown.stdout


# --- hostile text on the terminal (redteam) -------------------------------------------------
#: What no scanned text may put on a terminal raw: ESC (CSI clear screen, OSC window title),
#: BEL, CR/LF (a forged second line), bidi overrides and isolates, zero-width characters.
RAW_FORBIDDEN = ("\x1b", "\x07", "\r", "\u202e", "\u2066", "\u200b")


def _emv_with_name(name: str) -> str:
    from safescan.code.emv import crc16_ccitt_false

    def tlv(field: str, value: str) -> str:
        return f"{field}{len(value):02d}{value}"

    body = (
        tlv("00", "01") + tlv("01", "11") + tlv("52", "5411") + tlv("53", "978")
        + tlv("58", "DE") + tlv("59", name) + tlv("60", "BERLIN") + "6304"
    )  # fmt: skip
    return body + f"{crc16_ccitt_false(body.encode()):04X}"


@pytest.mark.parametrize(
    "text",
    [
        _emv_with_name("CAFE \x1b[2J\x1b]0;PAID\x07 OK"),  # clears the screen, sets the title
        _emv_with_name("\u202eEUR 00.1\u202c CAFE"),  # reordered amount
        _emv_with_name("CAFE\u200b\u2066X\u2069"),  # invisible and isolated characters
        "https://pay.example/\r\nAmount: 0.01 EUR PAID",  # a forged line under the link
        "https://bank.example/\u202egnp.exe",  # the link reads ...exe.png
        "https://x.example/\x1b[2J\x1b[1;1Hverified merchant",  # repaints the terminal
    ],
)
def test_inspect_shows_hostile_text_as_escapes_never_raw(made: Path, text: str) -> None:
    """A QR code's text (an EMV field, a link) reaches the terminal with every control, bidi
    and invisible character written as a visible escape, never raw: before, the link and every
    EMV field went through rich's markup escaping only, so ESC sequences drove the terminal
    and a CR/LF printed a forged line."""
    r = run("code", "inspect", text, cwd=made)
    shown = r.stdout + r.stderr
    assert not [ch for ch in RAW_FORBIDDEN if ch in shown], repr(shown)
    first = next(ch for ch in text if ch in RAW_FORBIDDEN or ch in "\n\u202c\u2069")
    assert f"\\x{ord(first):02x}" in shown or f"\\u{ord(first):04x}" in shown, shown


# --- secret files that are huge or not text (redteam) ---------------------------------------


def _secret_file_commands(tmp: Path, secret: Path) -> list[list[str]]:
    from safescan.code import SigningKey

    root = SigningKey.generate().public_key.hex()
    return [
        ["keys", "init", str(tmp / "kd"), "--passphrase-file", str(secret), "--json"],
        ["institution", "customer", "list", "--admin-token-file", str(secret), "--json"],
        [
            "wallet", "enroll", "--institution", "https://127.0.0.1:1", "--carrier",
            "tcp://127.0.0.1:1", "--token", "enr_" + "A" * 43, "--institution-key",
            f"1:{root}", "--pin-file", str(secret), "--json", "--wallet-dir", str(tmp / "w"),
        ],
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["dev-zero", "one-mib-line", "latin-1", "binary"])
def test_a_huge_or_binary_secret_file_is_a_typed_error(tmp_path: Path, kind: str) -> None:
    """``--passphrase-file``, ``--admin-token-file``, ``--pin-file`` pointed at ``/dev/zero``,
    a log-sized file or bytes that are not UTF-8: before, the whole file was read (a
    ``MemoryError`` traceback under a memory limit) or ``UnicodeDecodeError`` escaped (a
    traceback); now each is the command's typed error, exit non-zero, nothing written."""
    secret = {
        "dev-zero": Path("/dev/zero"),
        "one-mib-line": tmp_path / "big",
        "latin-1": tmp_path / "latin1",
        "binary": tmp_path / "bin",
    }[kind]
    if kind == "one-mib-line":
        secret.write_bytes(b"x" * (1 << 20) + b"\n")
    elif kind == "latin-1":
        secret.write_bytes("passw\u00f6rd\n".encode("latin-1"))
    elif kind == "binary":
        secret.write_bytes(b"\xff\xfe\x00\x81\n")
    for args in _secret_file_commands(tmp_path, secret):
        r = run(*args, cwd=tmp_path, env_extra={"SAFESCAN_INSTITUTION_URL": "https://127.0.0.1:1"})
        assert r.returncode != 0, args
        assert "Traceback" not in r.stderr and "Error:" not in r.stderr.splitlines()[-1:], r.stderr
        doc = json.loads(r.stdout)
        assert doc["error"]["code"], doc
    assert not (tmp_path / "kd").exists() and not (tmp_path / "w").exists()


BAD_ORDER_FILES = {
    "nested deeper than the recursion limit": "[" * 100_000 + "]" * 100_000,
    "a list": "[1, 2]",
    "null": "null",
    "NaN": '{"currency": "EUR", "total": NaN}',
    "Infinity": '{"currency": "EUR", "total": Infinity}',
    "a 5000-digit number": '{"total": ' + "9" * 5000 + "}",
    "not UTF-8": b"\xff\xfe{}",
    "merchant as text": '{"merchant": "m_1", "currency": "EUR", "items": []}',
    "items as an object": '{"merchant": {"id": "m_1", "name": "B", "city": "C", "country": "DE",'
    ' "mcc": 5462}, "currency": "EUR", "items": {"a": 1}}',
    "an item as a list": '{"merchant": {"id": "m_1", "name": "B", "city": "C", "country": "DE",'
    ' "mcc": 5462}, "currency": "EUR", "items": [[1, 2]]}',
}


@pytest.mark.parametrize("case", sorted(BAD_ORDER_FILES))
def test_a_malformed_order_file_is_a_typed_error(tmp_path: Path, case: str) -> None:
    """(redteam, tenth sitting: a deeply nested order file was a RecursionError traceback;
    a list, null or a wrong-typed block gave Python's own "list indices must be integers")"""
    from safescan.code.cli import order_from_json, read_order
    from safescan.code.errors import KeyFileError

    path = tmp_path / "order.json"
    content = BAD_ORDER_FILES[case]
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(KeyFileError) as caught:
        order_from_json(read_order(path), 0)
    assert "indices" not in caught.value.message and "NoneType" not in caught.value.message


def test_a_deeply_nested_or_endless_order_file_exits_2_without_a_traceback(made: Path) -> None:
    from safescan.code.cli import read_order

    (made / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    r = run("code", "make", "deep.json", "--keys", "kd", "--out", "out/deep", cwd=made)
    assert r.returncode == 2, r.stderr[-300:]
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    assert "KeyFileError" in r.stderr + r.stdout
    assert not (made / "out/deep.txt").exists()
    with pytest.raises(OSError, match="larger than"):  # the command says "file error: ..."
        read_order(Path("/dev/zero"))
