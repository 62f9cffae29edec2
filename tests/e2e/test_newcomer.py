"""The rough edges a first user hits, each tried the way a newcomer would: real commands,
against the running institution, key carriers and POS on 127.0.0.1 (issue 11)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safescan.client import AdminClient
from safescan.code import LineItem, qr
from safescan.merchant.client import MerchantApi
from safescan.procs import free_port
from tests.e2e.conftest import PIN, Party, World, start_new_carrier

SAFESCAN = str(Path(sys.executable).with_name("safescan"))


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SAFESCAN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        start_new_session=True,  # no controlling terminal: getpass reads stdin
    )


def jrun(*args: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    out = run(*args, "--json", **kw)
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def admin_env(world: World, tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "admin.token"
    token.write_text(world.stack.admin_token + "\n")
    return {
        "SAFESCAN_INSTITUTION_URL": world.base_url,
        "SAFESCAN_ADMIN_TOKEN": "",
        "SAFESCAN_TLS_CA": str(world.stack.tls_ca),  # the administrator's pinned CA (HTTPS)
        "TOKEN_FILE": str(token),
    }


# --- institution customer create | fund | list, enrollment-token ---------------------------------


def test_customer_desk_create_fund_list_and_token(world: World, admin_env: dict[str, str]) -> None:
    tf = ["--admin-token-file", admin_env["TOKEN_FILE"]]
    code, made = jrun("institution", "customer", "create", "--name", "Nadia Newcomer", *tf,
                      env=admin_env)  # fmt: skip
    assert code == 0 and made["name"] == "Nadia Newcomer" and made["balances"] == []
    cid = made["id"]
    human = run("institution", "customer", "fund", cid, "--amount", "12345", *tf, env=admin_env)
    assert human.returncode == 0, human.stderr
    assert "credited 123.45 EUR" in human.stdout and "balance now 123.45 EUR" in human.stdout
    code, funded = jrun("institution", "customer", "fund", cid, "--amount", "55", "--currency",
                        "jpy", *tf, env=admin_env)  # fmt: skip
    assert code == 0
    assert sorted((b["currency"], b["amount"]) for b in funded["balances"]) == [
        ("EUR", 12345),
        ("JPY", 55),
    ]
    code, listed = jrun("institution", "customer", "list", "--limit", "500", *tf, env=admin_env)
    assert code == 0
    mine = [c for c in listed["customers"] if c["id"] == cid]
    assert mine and mine[0]["carriers"] == 0
    assert {b["display"] for b in mine[0]["balances"]} == {"123.45 EUR", "55 JPY"}
    table = run("institution", "customer", "list", "--limit", "500", *tf, env=admin_env)
    assert cid in table.stdout and "123.45 EUR" in table.stdout
    code, tok = jrun("institution", "enrollment-token", cid, "--valid-days", "2", *tf,
                     env=admin_env)  # fmt: skip
    assert code == 0 and tok["token"].startswith("enr_") and tok["customer_id"] == cid
    human = run("institution", "enrollment-token", cid, *tf, env=admin_env)
    assert human.returncode == 0 and "enr_" in human.stdout and "root-keys" in human.stdout


@pytest.mark.parametrize(
    ("args", "error_type"),
    [
        (["customer", "fund", "CNOSUCHONE01", "--amount", "100"], "NotFound"),
        (["customer", "fund", "{cid}", "--amount", "100.00"], "UsageError"),  # not 1.00 EUR
        (["customer", "fund", "{cid}", "--amount", "1_000"], "UsageError"),
        (["customer", "fund", "{cid}", "--amount", "0"], "UsageError"),
        (["customer", "fund", "{cid}", "--amount", "-5"], "UsageError"),
        (["customer", "fund", "{cid}", "--amount", "100", "--currency", "XYZ"], "UnknownCurrency"),
        (["enrollment-token", "CNOSUCHONE01"], "NotFound"),
        (["customer", "create", "--name", "bad\u0007name"], "InvalidRequest"),
    ],
)
def test_customer_desk_refuses_bad_input_with_a_json_error(
    world: World, admin_env: dict[str, str], args: list[str], error_type: str
) -> None:
    cid = world.alice.customer_id
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        before = admin.customers.get(cid).balances
    argv = [a.replace("{cid}", cid) for a in args]
    code, doc = jrun("institution", *argv, "--admin-token-file", admin_env["TOKEN_FILE"],
                     env=admin_env)  # fmt: skip
    assert code != 0 and doc["error"]["type"] == error_type, doc
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        assert admin.customers.get(cid).balances == before  # nothing changed


def test_customer_desk_needs_a_valid_admin_token(world: World, tmp_path: Path) -> None:
    env = {
        "SAFESCAN_INSTITUTION_URL": world.base_url,
        "SAFESCAN_ADMIN_TOKEN": "",
        "SAFESCAN_TLS_CA": str(world.stack.tls_ca),
    }
    code, doc = jrun("institution", "customer", "list", env=env)
    assert code == 2 and "--admin-token-file" in doc["error"]["message"]
    bad = tmp_path / "bad.token"
    bad.write_text("adm_" + "x" * 43)
    code, doc = jrun("institution", "customer", "list", "--admin-token-file", str(bad), env=env)
    assert code == 2 and doc["error"]["type"] == "Unauthenticated"
    down = {"SAFESCAN_INSTITUTION_URL": f"http://127.0.0.1:{free_port()}",
            "SAFESCAN_ADMIN_TOKEN": world.stack.admin_token}  # fmt: skip
    code, doc = jrun("institution", "customer", "list", env=down)
    assert code == 2 and doc["error"]["type"] == "InstitutionUnreachable"


# --- wallet enroll: every local input checked before the token is spent -------------------------


def test_enroll_refuses_bad_local_input_before_spending_the_token(
    world: World, tmp_path: Path
) -> None:
    proc, carrier_url = start_new_carrier(world.stack, "carrier-olga")
    try:
        admin = world.stack.need_admin()
        cid = world.stack.customer("Olga", fund=1_000)
        token = admin.enrollment_tokens.issue(cid).token
        root = world.stack.root_keys()[0]
        good_pin = tmp_path / "good.pin"
        good_pin.write_text(PIN)
        existing = tmp_path / "existing"
        existing.mkdir()
        (existing / "wallet.json").write_text("{}")
        a_file = tmp_path / "a-file"
        a_file.write_text("not a directory")

        def enroll(*extra: str, pin: str = PIN, wallet: Path | None = None) -> tuple[int, Any]:
            pin_file = tmp_path / "pin"
            pin_file.write_text(pin)
            base = {"--institution": world.base_url, "--carrier": carrier_url, "--token": token,
                    "--institution-key": root, "--institution-ca": str(world.stack.tls_ca),
                    "--wallet-dir": str(wallet or tmp_path / "w")}  # fmt: skip
            for i in range(0, len(extra), 2):
                base[extra[i]] = extra[i + 1]
            argv = [x for kv in base.items() for x in kv]
            return jrun("wallet", "enroll", *argv, "--pin-file", str(pin_file))

        cases: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
            ("PIN", (), {"pin": "123"}),
            ("PIN", (), {"pin": "12ab56"}),
            ("PIN", (), {"pin": "1" * 17}),
            ("PIN", (), {"pin": "١٢٣٤٥٦"}),  # non-ASCII digits
            ("retry limit", ("--retry-limit", "1"), {}),
            ("retry limit", ("--retry-limit", "99"), {}),
            ("token is malformed", ("--token", "enr bad token"), {}),
            ("customer id", ("--customer-id", "C 1"), {}),
            ("institution URL", ("--institution", "ftp://127.0.0.1:1"), {}),
            ("carrier address", ("--carrier", "tcp://127.0.0.1"), {}),
            ("carrier address", ("--carrier", "bluetooth://card"), {}),
            ("already holds an enrolled wallet", (), {"wallet": existing}),
            ("cannot be created or written", (), {"wallet": a_file / "wallet"}),
        ]
        for needle, extra, kw in cases:
            code, doc = enroll(*extra, **kw)
            assert code == 2, (needle, doc)
            assert needle in doc["error"]["message"], (needle, doc)
            assert "nothing was sent" in doc["error"]["message"] or needle == "PIN"
        assert admin.customers.get(cid).carriers == ()  # the institution saw nothing
        code, doc = enroll(wallet=tmp_path / "good")  # the same token still works
        assert code == 0 and doc["enrolled"] is True and doc["customer_id"] == cid
        assert len(admin.customers.get(cid).carriers) == 1
    finally:
        proc.stop()


# --- wallet balance, history with refunds, change-pin ---------------------------------------------


def _pay(world: World, party: Party, items: list[LineItem]) -> str:
    with MerchantApi(world.pos) as api:
        order = api.create_order(items, currency="EUR")
    out = run("wallet", "scan", order.code, "--yes", "--pin-file", str(party.wallet_dir / "pin"),
              "--json", "--wallet-dir", str(party.wallet_dir))  # fmt: skip
    assert out.returncode == 0, out.stderr
    return order.order_id


def test_balance_and_history_show_refunds(world: World, fresh_party: Any) -> None:
    pia = fresh_party("pia")
    (pia.wallet_dir / "pin").write_text(PIN)
    wd = ["--wallet-dir", str(pia.wallet_dir)]
    code, doc = jrun("wallet", "balance", *wd)
    assert code == 0 and doc["balances"] == [
        {"currency": "EUR", "amount": 50_000, "display": "500.00 EUR"}
    ]
    assert doc["payments"] == [] and doc["customer_id"] == pia.customer_id
    order_id = _pay(world, pia, [LineItem("Tea", 2, 250)])
    refunded = run("pos", "refund", order_id, "--amount", "150", "--config", str(world.pos_path))
    assert refunded.returncode == 0 and "refunded 1.50 EUR" in refunded.stdout
    code, doc = jrun("wallet", "balance", *wd)
    assert doc["balances"][0]["display"] == "496.50 EUR"
    [payment] = doc["payments"]
    assert payment["display"] == "5.00 EUR" and payment["refunded_display"] == "1.50 EUR"
    assert [r["display"] for r in payment["refunds"]] == ["1.50 EUR"]
    human = run("wallet", "balance", *wd)
    assert "496.50 EUR" in human.stdout and "1.50 EUR" in human.stdout
    code, hist = jrun("wallet", "history", *wd)
    assert code == 0 and hist["refunds_checked"] is True
    assert hist["payments"][0]["refunded"] == 150
    human = run("wallet", "history", *wd)
    assert "refund 1.50 EUR on payment" in human.stdout
    code, hist = jrun("wallet", "history", "--offline", *wd)
    assert hist["refunds_checked"] is False and hist["payments"][0]["refunded"] == 0
    pia.carrier.stop()  # without the carrier the receipts are shown, refunds marked unknown
    human = run("wallet", "history", *wd)
    assert human.returncode == 0 and "refunds not checked" in human.stdout
    code, doc = jrun("wallet", "balance", *wd)
    assert code == 2 and "carrier" in doc["error"]["message"]


def test_change_pin(world: World, fresh_party: Any, tmp_path: Path) -> None:
    quinn = fresh_party("quinn")
    wd = ["--wallet-dir", str(quinn.wallet_dir)]

    def change(old: str, new: str) -> tuple[int, dict[str, Any]]:
        (tmp_path / "old").write_text(old)
        (tmp_path / "new").write_text(new)
        return jrun("wallet", "change-pin", "--old-pin-file", str(tmp_path / "old"),
                    "--new-pin-file", str(tmp_path / "new"), *wd)  # fmt: skip

    def tries() -> int:
        _, doc = jrun("wallet", "status", *wd)
        return int(doc["carrier"]["pin_retries_left"])

    code, doc = change(PIN, "12")  # bad new PIN: refused here, no try spent
    assert code == 2 and "PIN is not valid" in doc["error"]["message"] and tries() == 5
    code, doc = change("000000", "135791")  # wrong current PIN: one try spent
    assert code == 2 and "4 tries left" in doc["error"]["message"] and tries() == 4
    code, doc = change(PIN, "135791")
    assert code == 0 and doc == {"pin_changed": True} and tries() == 5
    (quinn.wallet_dir / "pin").write_text(PIN)  # the old PIN no longer pays
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Tea", 1, 200)], currency="EUR")
    out = run("wallet", "scan", order.code, "--yes", "--pin-file", str(quinn.wallet_dir / "pin"),
              "--json", *wd)  # fmt: skip
    assert out.returncode == 2
    (quinn.wallet_dir / "pin").write_text("135791")
    assert _pay(world, quinn, [LineItem("Tea", 1, 200)])
    interactive = run("wallet", "change-pin", *wd, stdin="135791\n246802\n246802\n")
    assert interactive.returncode == 0 and "PIN changed" in interactive.stdout


# --- pos onboard, orders, refund ------------------------------------------------------------------


def test_pos_onboard_requires_country_mcc_and_a_valid_iban(world: World, tmp_path: Path) -> None:
    env = {"SAFESCAN_ADMIN_TOKEN": world.stack.admin_token}
    base = ["pos", "onboard", "--institution", world.base_url, "--name", "Kiosk", "--city",
            "Lyon", "--institution-ca", str(world.stack.tls_ca)]  # fmt: skip
    good = {
        "--country": "FR",
        "--mcc": "5814",
        "--settlement-account": "FR7630006000011234567890189",
    }
    for missing in good:
        argv = [x for k, v in good.items() if k != missing for x in (k, v)]
        code, doc = jrun(*base, *argv, "--config", str(tmp_path / "x.json"), env=env)
        assert code == 2 and missing in doc["error"]["message"], doc
    for key, value, needle in [
        ("--settlement-account", "FR7630006000011234567890188", "check digits"),
        ("--settlement-account", "FR76300060000112345678901", "IBAN"),
        ("--settlement-account", "not an iban", "not a valid IBAN"),
        ("--country", "France", "two-letter"),
        ("--mcc", "12345", "MCC"),
        ("--currency", "XYZ", "unknown currency"),
    ]:
        argv = [x for k, v in {**good, key: value}.items() for x in (k, v)]
        code, doc = jrun(*base, *argv, "--config", str(tmp_path / "x.json"), env=env)
        assert code == 2 and needle in doc["error"]["message"], (key, value, doc)
    assert not (tmp_path / "x.json").exists()
    argv = [x for k, v in {**good, "--settlement-account": "fr76 3000 6000 0112 3456 7890 189"}
            .items() for x in (k, v)]  # fmt: skip
    code, doc = jrun(*base, *argv, "--config", str(tmp_path / "pos.json"), env=env)
    assert code == 0 and doc["settlement_account"] == "FR7630006000011234567890189"
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        merchant = admin.merchants.get(doc["merchant_id"])
    assert (merchant.country, merchant.mcc) == ("FR", 5814)


def test_pos_orders_with_the_institution_down_says_states_may_be_stale(
    world: World, tmp_path: Path
) -> None:
    config = json.loads(world.pos_path.read_text())
    made = run("pos", "order", "--item", "Tea:1:200", "--no-wait", "--png",
               str(tmp_path / "o.png"), "--config", str(world.pos_path))  # fmt: skip
    assert made.returncode == 0, made.stderr
    offline = tmp_path / "pos.json"
    offline.write_text(json.dumps({**config, "institution_url": f"http://127.0.0.1:{free_port()}"}))
    offline.chmod(0o600)
    shutil.copy(world.pos_path.with_name("pos-journal.sqlite3"), tmp_path / "pos-journal.sqlite3")
    code, doc = jrun("pos", "orders", "--config", str(offline))
    assert code == 3
    assert doc["stale"] and all(o["stale"] for o in doc["orders"] if o["order_id"] in doc["stale"])
    assert "cannot be reached" in doc["error"]
    human = run("pos", "orders", "--config", str(offline))
    assert human.returncode == 3
    assert "may be stale" in human.stdout and "could not be checked" in human.stderr
    code, doc = jrun("pos", "orders", "--config", str(world.pos_path))
    assert code == 0 and doc["stale"] == []


def test_pos_refund_idempotency_key_makes_a_retry_the_same_refund(
    world: World, fresh_party: Any
) -> None:
    rita = fresh_party("rita")
    (rita.wallet_dir / "pin").write_text(PIN)
    order_id = _pay(world, rita, [LineItem("Cake", 2, 400)])
    cfg = ["--config", str(world.pos_path)]
    key = "refund-" + order_id
    first = jrun("pos", "refund", order_id, "--amount", "300", "--idempotency-key", key, *cfg)
    again = jrun("pos", "refund", order_id, "--amount", "300", "--idempotency-key", key, *cfg)
    assert first[0] == again[0] == 0 and first[1]["refund_id"] == again[1]["refund_id"]
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        assert admin.customers.balance(rita.customer_id, "EUR") == 50_000 - 800 + 300
    code, doc = jrun("pos", "refund", order_id, "--amount", "200", "--idempotency-key", key, *cfg)
    assert code == 2 and doc["error"]["code"] == "idempotency_conflict"
    code, doc = jrun("pos", "refund", order_id, "--amount", "900", *cfg)
    assert code == 2 and doc["error"]["message"] == (
        "the refund of 9.00 EUR exceeds the 5.00 EUR left to refund"
    )
    code, doc = jrun("pos", "refund", order_id, "--idempotency-key", "has space", *cfg)
    assert code == 2 and doc["error"]["param"] == "idempotency_key"


# --- wallet scan of codes that are not safescan codes ---------------------------------------


def test_wallet_scan_shows_what_an_emv_code_holds(world: World, tmp_path: Path) -> None:
    from tests.code.test_emv_national import DUITNOW_RETAIL, PROMPTPAY_MOBILE

    png = tmp_path / "duitnow.png"
    qr.save_png(DUITNOW_RETAIL, png)
    wd = ["--wallet-dir", str(world.alice.wallet_dir)]
    out = run("wallet", "scan", str(png), *wd)
    assert out.returncode == 3
    for shown in ("UNVERIFIED", "QRCSDNBHD", "BANGI", "10.00 MYR", "MYR", "CRC", "ok"):
        assert shown in out.stdout, shown
    code, doc = jrun("wallet", "scan", PROMPTPAY_MOBILE, *wd)
    assert code == 3 and doc["info"]["summary"]["amount_display"] == "50.00 THB"
    assert "mandatory ID 59 (merchant name) is missing" in doc["info"]["warnings"]
    out = run("wallet", "scan", PROMPTPAY_MOBILE, *wd)
    assert "50.00 THB" in out.stdout and "merchant name" in out.stdout


def test_wallet_scan_mistyped_path_is_file_not_found(world: World) -> None:
    wd = ["--wallet-dir", str(world.alice.wallet_dir)]
    code, doc = jrun("wallet", "scan", "o1.pgn", *wd)
    assert code == 2 and doc["error"]["type"] == "InputNotFound"
    out = run("wallet", "scan", "o1.pgn", *wd)
    assert "file not found: o1.pgn" in out.stderr and "not a payment code" not in out.stdout


# --- the command line itself ---------------------------------------------------------------


def test_version_and_shell_completion() -> None:
    from safescan import __version__

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"safescan {__version__}"
    env = {"_SAFESCAN_COMPLETE": "complete_bash", "COMP_WORDS": "safescan wallet ch",
           "COMP_CWORD": "2"}  # fmt: skip
    assert run(env=env).stdout.split() == ["change-pin"]
    env["COMP_WORDS"], env["COMP_CWORD"] = "safescan institution cu", "2"
    assert run(env=env).stdout.split() == ["customer"]
    # as a user would: from a shell (Typer finds the shell among the parent processes; "; true"
    # keeps bash from replacing itself with the command)
    script = subprocess.run(
        ["/bin/bash", "-c", f"{SAFESCAN} --show-completion; true"],
        capture_output=True, text=True, timeout=90, check=False, start_new_session=True,
        env={**os.environ, "SHELL": "/bin/bash"},
    )  # fmt: skip
    assert "_SAFESCAN_COMPLETE" in script.stdout and "complete " in script.stdout, script.stderr


@pytest.mark.parametrize(
    "argv",
    # the pos, wallet and carrier commands' refusals: tests/test_json_errors.py (every --json
    # command of those groups, in process); here the groups it does not run and usage errors,
    # which only the real entry point (run_app) answers in JSON
    [
        ["institution", "migrate", "--db", "inst.db"],
        ["institution", "audit", "--db", "sqlite:////nonexistent/dir/x.db"],
        ["institution", "root-keys", "--db", "sqlite:////nonexistent/dir/x.db"],
        ["institution", "admin-token", "list", "--db", "postgresql://nobody@127.0.0.1:1/x"],
        ["institution", "settlement", "--db", "mysql://x/y", "--date", "2026-01-01"],
        ["keys", "show", "/nonexistent/cert"],
        ["code", "make", "/nonexistent/order.json", "--keys", "/nonexistent", "--out", "x"],
        ["code", "inspect", "missing-file.png"],
        ["wallet", "scan"],  # a usage error: JSON too
        ["pos", "refund", "O1", "--amount", "1.50"],
    ],
)
def test_every_command_reports_errors_as_one_json_object(argv: list[str], tmp_path: Path) -> None:
    out = subprocess.run([SAFESCAN, *argv, "--json"], capture_output=True, text=True, timeout=60,
                         check=False, cwd=tmp_path, start_new_session=True)  # fmt: skip
    assert out.returncode != 0, out.stdout
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    doc = json.loads(lines[0])
    error = doc["error"]
    assert set(error) >= {"type", "code", "message"} and error["message"], doc
    assert "Traceback" not in out.stderr


def test_institution_init_suggests_a_database_url(tmp_path: Path) -> None:
    out = subprocess.run([SAFESCAN, "institution", "init", "--db", "inst.db"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 2 and "sqlite:///inst.db" in out.stderr
    assert not (tmp_path / "inst.db").exists() and not (tmp_path / "inst.db.keys").exists()
