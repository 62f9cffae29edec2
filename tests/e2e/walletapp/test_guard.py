"""Attacks on the wallet app's local service, over real HTTP on 127.0.0.1 (docs/threat-model.md).

Other web pages (CSRF, DNS rebinding), other local processes (no pairing secret, guessed
sessions and offer ids), hostile input (frames, bodies), double submission, and the PIN's
path (never in a log or a file). The service runs as its own process (``safescan wallet
serve``) for a customer with a real key carrier process and the session's institution.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from safescan.client import AdminClient
from safescan.code import LineItem, qr
from safescan.merchant.client import MerchantApi
from tests.e2e.conftest import PIN, Party, World
from tests.e2e.walletapp.browser import WalletServer, start_wallet_server


def _secret(server: WalletServer) -> str:
    return server.pair_url.split("#pair=", 1)[1]


def _origin(server: WalletServer) -> dict[str, str]:
    return {"Origin": server.url}


def _session(server: WalletServer) -> str:
    r = httpx.post(
        server.url + "/api/pair", json={"secret": _secret(server)}, headers=_origin(server)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["session"])


def _auth(server: WalletServer, sid: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sid}", **_origin(server)}


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def _balance(world: World, customer: str) -> int:
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        return admin.customers.balance(customer, "EUR")


def test_dns_rebinding_hosts_are_refused_on_every_route(server: WalletServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    sid = _session(server)
    for host in [
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        f"localhost.:{port}",
        "127.0.0.1:1",
        f"127.0.0.2:{port}",
        f"[::2]:{port}",
        f"127.0.0.1:{port}:{port}",
        "",
    ]:
        for method, path in [
            ("GET", "/"),
            ("GET", "/static/app.js"),
            ("GET", "/api/state"),
            ("GET", "/api/history"),
            ("POST", "/api/pair"),
            ("POST", "/api/scan"),
        ]:
            r = httpx.request(
                method, server.url + path, headers={"Host": host, **_auth(server, sid)}, json={}
            )
            assert r.status_code == 421, (host, path, r.status_code)
            assert _code(r) == "host_not_allowed"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert httpx.get(server.url + "/", headers={"Host": host}).status_code == 200


def test_state_changing_requests_need_this_origin(server: WalletServer) -> None:
    sid = _session(server)
    port = int(server.url.rsplit(":", 1)[1])
    auth = {"Authorization": f"Bearer {sid}"}
    body = {"text": "hello"}
    for headers in [
        {},  # no Origin at all
        {"Origin": "http://evil.example"},
        {"Origin": f"http://127.0.0.1:{port + 1}"},
        {"Origin": "null"},
        {"Origin": f"https://127.0.0.1:{port}"},
        {"Origin": server.url, "Sec-Fetch-Site": "cross-site"},
        {"Origin": server.url, "Sec-Fetch-Site": "same-site"},
    ]:
        for path in ("/api/scan", "/api/pair", "/api/change-pin", "/api/offers/x/pay"):
            r = httpx.post(server.url + path, json=body, headers={**auth, **headers})
            assert r.status_code == 403, (headers, path, r.status_code)
            assert _code(r) == "origin_refused"
    ok = httpx.post(server.url + "/api/scan", json=body, headers=_auth(server, sid))
    assert ok.status_code == 200 and ok.json()["result"] == "not_payable"


def test_the_api_needs_a_paired_session(server: WalletServer) -> None:
    sid = _session(server)
    routes = [
        ("GET", "/api/state"),
        ("GET", "/api/history"),
        ("GET", "/api/balance"),
        ("GET", "/api/status"),
        ("POST", "/api/scan"),
        ("POST", "/api/decode"),
        ("POST", "/api/picture"),
        ("POST", "/api/enroll"),
        ("POST", "/api/change-pin"),
        ("POST", "/api/offers/abc/pay"),
        ("POST", "/api/offers/abc/cancel"),
        ("POST", "/api/signout"),
    ]
    for auth in [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer " + sid[:-1] + ("A" if sid[-1] != "A" else "B")},
        {"Authorization": "Bearer " + _secret(server)},  # the pairing secret is not a session
        {"Authorization": "Basic " + sid},
        {"Cookie": f"session={sid}; safescan_wallet_session={sid}"},  # no ambient credential
    ]:
        for method, path in routes:
            r = httpx.request(method, server.url + path, headers={**auth, **_origin(server)})
            assert r.status_code == 401, (auth, path, r.status_code)
            assert _code(r) == "not_signed_in"
    assert httpx.get(server.url + "/api/state", headers=_auth(server, sid)).status_code == 200
    # signing out ends the session
    out = httpx.post(server.url + "/api/signout", headers=_auth(server, sid))
    assert out.status_code == 200
    assert httpx.get(server.url + "/api/state", headers=_auth(server, sid)).status_code == 401


def test_pairing_needs_the_secret_and_wrong_guesses_are_throttled(
    world: World, party: Party
) -> None:
    srv = start_wallet_server(world.stack, party.wallet_dir, "appguard-pairing")
    try:
        url, origin = srv.url + "/api/pair", {"Origin": srv.url}
        for bad in [{}, {"secret": 1}, {"secret": ""}, {"secret": _secret(srv)[:-1]}, ["x"]]:
            r = httpx.post(url, json=bad, headers=origin)
            assert r.status_code in (400, 401), (bad, r.status_code)
        for raw in (b'{"secret": "\\ud800"}', b'{"secret": "\\udfff\\ud800x"}'):  # was a 500
            r = httpx.post(url, content=raw, headers={**origin, "Content-Type": "application/json"})
            assert r.status_code == 400 and _code(r) == "wallet_request_invalid", r.text
        r = httpx.post(url, content=b"not json", headers={**origin, "Content-Type": "text/plain"})
        assert r.status_code == 400
        guesses = [
            httpx.post(url, json={"secret": f"guess-{i:040d}"}, headers=origin) for i in range(8)
        ]
        assert {r.status_code for r in guesses} <= {401, 429}
        # after ten wrong secrets in a minute even the right one waits: no brute force
        locked = httpx.post(url, json={"secret": _secret(srv)}, headers=origin)
        assert locked.status_code == 429 and _code(locked) == "too_many_attempts"
    finally:
        srv.stop()
    log = srv.proc.log.read_text()
    assert "wrong secret" in log and _secret(srv) not in log


def test_an_offer_pays_once_whatever_is_sent_twice(
    world: World, party: Party, server: WalletServer
) -> None:
    sid = _session(server)
    headers = _auth(server, sid)
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Tart", 1, 510)], currency="EUR")
    before = _balance(world, party.customer_id)
    r = httpx.post(server.url + "/api/scan", json={"text": order.code}, headers=headers, timeout=30)
    doc = r.json()
    assert doc["result"] == "offer", doc
    offer_id = doc["offer"]["offer_id"]
    # a guessed offer id pays nothing (and does not close the real one)
    for guess in ("x", offer_id[:-1], offer_id + "A", "../" + offer_id):
        bad = httpx.post(
            server.url + f"/api/offers/{guess}/pay", json={"pin": PIN}, headers=headers, timeout=30
        )
        assert bad.status_code in (400, 404), (guess, bad.status_code)
    # two presses of "Pay" at once: one payment
    pay_url = server.url + f"/api/offers/{offer_id}/pay"

    def press() -> httpx.Response:
        return httpx.post(pay_url, json={"pin": PIN}, headers=headers, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: press(), range(4)))
    results = [a.json().get("result") or _code(a) for a in answers]
    assert results.count("paid") == 1, results
    assert sorted(results) == ["paid", *["wallet_request_invalid"] * 3], results
    assert _balance(world, party.customer_id) == before - 510
    # a malformed body changes nothing
    again = httpx.post(server.url + "/api/scan", json={"text": order.code}, headers=headers)
    assert again.json()["result"] == "refused" and again.json()["reason"] == "already_paid"


def test_bad_bodies_are_refused_with_typed_errors(server: WalletServer) -> None:
    sid = _session(server)
    headers = _auth(server, sid)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/api/scan", {"json": {"text": 5}}),
        ("/api/scan", {"json": {"text": "x" * 9000}}),
        ("/api/scan", {"json": ["text"]}),
        ("/api/scan", {"content": b"{", "headers": {"Content-Type": "application/json"}}),
        ("/api/scan", {"content": b"x" * 20_000, "headers": {"Content-Type": "application/json"}}),
        ("/api/scan", {"content": b'{"text": "a"}', "headers": {"Content-Type": "text/plain"}}),
        ("/api/change-pin", {"json": {"old": 1234, "new": "5678"}}),
        ("/api/enroll", {"json": {"token": True}}),
    ]
    # redteam: lone surrogates (a 500 from a later .encode()), NaN, deep nesting, not UTF-8
    hostile = [
        b'{"text": "\\ud800"}',
        b'{"text": "SS1:\\udc80AB"}',
        b'{"\\ud800": "x", "text": "a"}',
        b'{"old": "\\ud800", "new": "5678"}',
        b'{"text": NaN}',
        b'{"old": 1e999, "new": "5678"}',
        b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"text": "\xff\xfe"}',
    ]
    for raw in hostile:
        for path in ("/api/scan", "/api/decode", "/api/change-pin", "/api/enroll"):
            cases.append((path, {"content": raw, "headers": {"Content-Type": "application/json"}}))
    for path, kw in cases:
        extra = kw.pop("headers", {})
        r = httpx.post(server.url + path, headers={**headers, **extra}, **kw)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "wallet_request_invalid"


def test_numbers_in_plain_digits_only_and_a_refusal_changes_nothing(
    world: World, party: Party, server: WalletServer
) -> None:
    sid = _session(server)
    headers = _auth(server, sid)
    for limit in ("1_0", "+5", " 5", "5.0", "0", "1001", "-1", "1e2", ""):
        r = httpx.get(server.url + "/api/history", params={"limit": limit}, headers=headers)
        assert r.status_code == 400, (limit, r.text)
        assert r.json()["error"]["code"] == "wallet_request_invalid"
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Tea", 1, 250)], currency="EUR")
    offer = httpx.post(server.url + "/api/scan", json={"text": order.code}, headers=headers)
    offer_id = offer.json()["offer"]["offer_id"]
    before = _balance(world, party.customer_id)
    for amount in (0, -250, 10**30, True, "250", 2.5):
        r = httpx.post(
            server.url + f"/api/offers/{offer_id}/pay",
            json={"pin": PIN, "amount": amount},
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 400, (amount, r.text)
        assert r.json()["error"]["code"] == "wallet_request_invalid"
    assert _balance(world, party.customer_id) == before
    # the offer is still open and pays as it should
    paid = httpx.post(
        server.url + f"/api/offers/{offer_id}/pay", json={"pin": PIN}, headers=headers, timeout=60
    )
    assert paid.json()["result"] == "paid", paid.text
    assert _balance(world, party.customer_id) == before - 250


def test_frame_decoding_checks_sizes_and_reads_codes(server: WalletServer) -> None:
    sid = _session(server)
    headers = {**_auth(server, sid), "Content-Type": "application/octet-stream"}
    url = server.url + "/api/decode"
    for w, h, size in [
        ("0", "10", 0),
        ("-5", "10", 10),
        ("10", "x", 10),
        ("", "", 10),
        ("5000", "10", 10),
        ("2000", "2001", 10),
        ("10", "10", 99),
        ("10", "10", 101),
        ("1_0", "10", 100),  # what int() would take: not plain digits
        ("+10", "10", 100),
        ("10.0", "10", 100),
        ("0x0a", "10", 100),
    ]:
        r = httpx.post(
            url, content=b"\0" * size, headers={**headers, "X-Frame-Width": w, "X-Frame-Height": h}
        )
        assert r.status_code == 400, (w, h, size, r.status_code)
        assert r.json()["error"]["code"] == "wallet_request_invalid"
    blank = httpx.post(
        url,
        content=b"\x80" * 6400,
        headers={**headers, "X-Frame-Width": "80", "X-Frame-Height": "80"},
    )
    assert blank.status_code == 200 and blank.json() == {"texts": []}
    img = qr.make_qr("SAFESCAN TEST 123").to_image(module_size=6).convert("L")
    frame = httpx.post(
        url,
        content=img.tobytes(),
        headers={**headers, "X-Frame-Width": str(img.width), "X-Frame-Height": str(img.height)},
    )
    assert frame.json() == {"texts": ["SAFESCAN TEST 123"]}
    picture = httpx.post(server.url + "/api/picture", content=b"GIF89a broken", headers=headers)
    assert picture.status_code == 400 and picture.json()["error"]["code"] == "image_unreadable"


def test_pages_carry_a_strict_content_security_policy(server: WalletServer) -> None:
    page = httpx.get(server.url + "/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    wasm = httpx.get(server.url + "/static/vendor/zxing-wasm/zxing_reader.wasm")
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.headers["cross-origin-resource-policy"] == "same-origin"
    for bad in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/nope.js"):
        assert httpx.get(server.url + bad).status_code == 404
    sw = httpx.get(server.url + "/sw.js").text
    assert "__ASSETS_VERSION__" not in sw and "/api/" in sw


# a new PIN of the right form (4-16 digits) sent with an old one of the wrong form: 16 digits,
# not 5, so that no log line's or stored value's digits hold it by chance
NEW_PIN = "8642097531086420"


def test_the_pin_reaches_no_log_and_no_file(
    world: World, party: Party, server: WalletServer
) -> None:
    sid = _session(server)
    headers = _auth(server, sid)
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Pie", 1, 330)], currency="EUR")
    offer = httpx.post(server.url + "/api/scan", json={"text": order.code}, headers=headers)
    offer_id = offer.json()["offer"]["offer_id"]
    wrong = "7391460528"  # 10 digits: a short one could be in a file's digits by chance
    r = httpx.post(
        server.url + f"/api/offers/{offer_id}/pay", json={"pin": wrong}, headers=headers, timeout=30
    )
    assert r.json() == {"result": "wrong_pin", "retries_left": 4}
    r = httpx.post(
        server.url + f"/api/offers/{offer_id}/pay", json={"pin": PIN}, headers=headers, timeout=30
    )
    assert r.json()["result"] == "paid"
    # a PIN of the wrong form is refused without echoing it back
    r = httpx.post(
        server.url + "/api/change-pin", json={"old": "12ab", "new": NEW_PIN}, headers=headers
    )
    assert "12ab" not in r.text and NEW_PIN not in r.text
    files = [server.proc.log, *[p for p in party.wallet_dir.rglob("*") if p.is_file()]]
    for path in files:
        data = path.read_bytes()
        for secret in (wrong, PIN, NEW_PIN):
            assert secret.encode() not in data, f"{secret} in {path}"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safescan wallet test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_is_enabled_by_configuration(world: World, party: Party, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    srv = start_wallet_server(
        world.stack, party.wallet_dir, "appguard-tls", "--tls-cert", str(cert),
        "--tls-key", str(key), verify=cert,
    )  # fmt: skip
    try:
        assert srv.url.startswith("https://127.0.0.1:") and srv.pair_url.startswith(srv.url)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            assert client.get(srv.url + "/health").json() == {"status": "ok"}
            pair = {"secret": _secret(srv)}
            plain_origin = {"Origin": srv.url.replace("https://", "http://")}
            assert (
                client.post(srv.url + "/api/pair", json=pair, headers=plain_origin).status_code
                == 403
            )
            ok = client.post(srv.url + "/api/pair", json=pair, headers={"Origin": srv.url})
            assert ok.status_code == 201
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/health")  # not trusted without the certificate
        with pytest.raises(httpx.HTTPError):
            httpx.get(srv.url.replace("https://", "http://") + "/health")
    finally:
        srv.stop()


def _serve_fails(world: World, party: Party, *args: str) -> str:
    from tests.institution.pg import free_port  # not port 0: see tests/test_ports.py

    out = subprocess.run(
        [sys.executable, "-m", "safescan", "wallet", "serve", "--wallet-dir",
         str(party.wallet_dir), "--port", str(free_port()), *args],
        capture_output=True, text=True, timeout=60, env=world.stack.env(), check=False,
    )  # fmt: skip
    assert out.returncode != 0 and "READY" not in out.stdout
    return out.stderr


def test_serve_refuses_unsafe_or_broken_settings(
    world: World, party: Party, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = _self_signed(tmp_path / "other")
    assert "loopback only" in _serve_fails(world, party, "--host", "0.0.0.0")
    assert "both a certificate" in _serve_fails(world, party, "--tls-cert", str(cert))
    assert "cannot be used together" in _serve_fails(
        world, party, "--tls-cert", str(other_cert), "--tls-key", str(key)
    )
    assert "not found" in _serve_fails(
        world, party, "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(key)
    )
