"""SSRF through webhook URLs, attacked at registration and on every connection (in process).

The real dispatcher and connection pool run against real servers on 127.0.0.1; DNS is a
resolver injected into the target policy (names resolve to whatever the attack needs, and the
answer can change between registration and connection: rebinding). Test receivers are reached
only because the policy allow-lists 127.0.0.1 explicitly; every other internal address stays
refused, and the attacks check that the receiver behind a refused address saw nothing.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from safescan.api.errors import WebhookUrlRefused
from safescan.api.events import verify_webhook
from safescan.institution.service import Institution
from safescan.institution.webhook_targets import TargetPolicy
from tests.institution.dispatch import (
    Dispatch,
    Resolver,
    emit,
    events,
    make_institution,
    merchant,
    store_url,
    trust,
)
from tests.institution.harness import World
from tests.institution.receivers import Listener, answer, make_ca, redirect, server_tls

LOOPBACK = ("127.0.0.1/32",)

# Every spelling of an internal target we know: (url, what it is). All refused at registration
# although 127.0.0.1 itself is allow-listed (the non-canonical spellings of it included: a
# parser that reads them differently from ours must never get them).
INTERNAL_LITERALS = [
    ("http://2130706433:8080/", "127.0.0.1 as one decimal number"),
    ("http://017700000001:8080/", "127.0.0.1 as one octal number"),
    ("http://0x7f000001:8080/", "127.0.0.1 as one hex number"),
    ("http://0x7f.0.0.1:8080/", "127.0.0.1 with a hex first part"),
    ("http://0177.0.0.1:8080/", "127.0.0.1 with an octal first part"),
    ("http://127.1:8080/", "127.0.0.1 shortened"),
    ("http://127.0.1:8080/", "127.0.0.1 shortened to three parts"),
    ("http://127.000.000.001:8080/", "127.0.0.1 zero-padded"),
    ("http://0:8080/", "0.0.0.0 as a number"),
    ("http://0.0.0.0:8080/", "the unspecified address"),
    ("http://127.0.0.2:8080/", "another loopback address"),
    ("http://127.255.255.254:8080/", "the top of loopback"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata (AWS, GCP, Azure)"),
    ("http://169.254.170.2/v2/credentials", "ECS task metadata"),
    ("http://2852039166/", "cloud metadata as a decimal number"),
    ("http://0xa9fea9fe/", "cloud metadata as hex"),
    ("http://10.0.0.1:8080/", "RFC 1918 10/8"),
    ("http://172.16.0.1:8080/", "RFC 1918 172.16/12"),
    ("http://172.31.255.254:8080/", "RFC 1918 172.16/12, top"),
    ("http://192.168.1.1:8080/", "RFC 1918 192.168/16"),
    ("http://100.64.0.1:8080/", "carrier-grade NAT"),
    ("http://198.18.0.1:8080/", "benchmarking"),
    ("http://192.0.0.8:8080/", "IETF protocol assignment"),
    ("http://192.0.2.1:8080/", "documentation"),
    ("http://224.0.0.1:8080/", "multicast"),
    ("http://239.255.255.250:8080/", "SSDP multicast"),
    ("http://240.0.0.1:8080/", "reserved"),
    ("http://255.255.255.255:8080/", "broadcast"),
    ("http://[::1]:8080/", "IPv6 loopback"),
    ("http://[0:0:0:0:0:0:0:1]:8080/", "IPv6 loopback, long form"),
    ("http://[::]:8080/", "IPv6 unspecified"),
    ("http://[::ffff:127.0.0.1]:8080/", "IPv4-mapped loopback (dotted)"),
    ("http://[::ffff:7f00:1]:8080/", "IPv4-mapped loopback (hex)"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped metadata"),
    ("http://[::127.0.0.1]:8080/", "IPv4-compatible loopback"),
    ("http://[::ffff:0:7f00:1]:8080/", "IPv4-translated loopback"),
    ("http://[64:ff9b::7f00:1]:8080/", "NAT64 of loopback"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 of metadata"),
    ("http://[64:ff9b:1::a00:1]:8080/", "local-use NAT64"),
    ("http://[2002:7f00:1::1]:8080/", "6to4 of loopback"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:8080/", "Teredo"),
    ("http://[fd00:ec2::254]/", "AWS IPv6 metadata (ULA)"),
    ("http://[fc00::1]:8080/", "unique local"),
    ("http://[fe80::1]:8080/", "IPv6 link-local"),
    ("http://[fe80::1%25lo]:8080/", "IPv6 link-local with a zone"),
    ("http://[fec0::1]:8080/", "IPv6 site-local"),
    ("http://[ff02::1]:8080/", "IPv6 multicast"),
    ("http://[2001:db8::1]:8080/", "IPv6 documentation"),
    ("http://[100::1]:8080/", "IPv6 discard"),
]
# Malformed, ambiguous or smuggling URLs.
MALFORMED = [
    "",
    "hooks.example.com/x",
    "ftp://hooks.example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "https:/hooks.example.com/",
    "https://",
    "https://user:pass@hooks.example.com/",
    "https://hooks.example.com@127.0.0.1/",
    "https://127.0.0.1#@hooks.example.com/",
    "https://hooks.example.com\\@127.0.0.1/",
    "https://hooks.example.com/x#frag",
    "https://hooks.example.com:0/",
    "https://hooks.example.com:65536/",
    "https://hooks.example.com:22/",
    "https://hooks.example.com:-1/",
    "https://hooks.example.com:/",
    "https://hooks.example.com:1e3/",
    "https://hooks.example.com/a b",
    "https://hooks.example.com/\x00",
    "https://hooks.example.com/\r\nX-Injected: 1",
    "https://h\u0435ooks.example.com/",  # Cyrillic e
    "https://hooks.example.com\u3002evil.com/",  # ideographic full stop
    "https://[::1/",
    "https://[hooks.example.com]/",
    "https://::1/",
    "https://localhost/",
    "https://LOCALHOST:8080/",
    "https://api.localhost/",
    "https://printer.local/",
    "https://db.internal/",
    "https://hidden.onion/",
    "https://1.0.0.127.in-addr.arpa/",
    "https://hooks.example.com./",
    "https://-bad.example.com/",
    "https://" + "a" * 64 + ".example.com/",
    "https://hooks.example.com/" + "p" * 600,
    "https://hooks.example.com/%zz",
    "http://hooks.example.com/",  # plain http where the policy wants https
]


@pytest.fixture
def inst(tmp_path: Path) -> Institution:
    return make_institution(tmp_path)


def _policy(
    resolver: Resolver, *, allow: tuple[str, ...] = LOOPBACK, http: bool = True
) -> TargetPolicy:
    return TargetPolicy(allow=allow, allow_http=http, resolver=resolver)


def _count_merchants(inst: Institution) -> int:
    return int(inst.db.read(lambda c: c.exec_driver_sql("SELECT count(*) FROM merchants").scalar()))


@pytest.mark.parametrize(("url", "what"), INTERNAL_LITERALS, ids=[w for _, w in INTERNAL_LITERALS])
def test_internal_address_spellings_are_refused_and_change_nothing(
    inst: Institution, url: str, what: str
) -> None:
    inst.webhook_targets = _policy(Resolver())
    mid = merchant(inst, "Victim Cafe", "http://127.0.0.1:9999/unused")
    before = inst.merchants.get(mid).webhook_url
    n = _count_merchants(inst)
    with pytest.raises(WebhookUrlRefused) as info:
        merchant(inst, "Evil Cafe", url)
    assert info.value.code == "webhook_url_refused" and info.value.param == "url", what
    with pytest.raises(WebhookUrlRefused):
        inst.merchants.set_webhook(mid, url)
    assert _count_merchants(inst) == n
    assert inst.merchants.get(mid).webhook_url == before


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_and_smuggling_urls_are_refused(inst: Institution, url: str) -> None:
    inst.webhook_targets = TargetPolicy(resolver=Resolver({"hooks.example.com": ["93.184.215.14"]}))
    with pytest.raises(WebhookUrlRefused):
        merchant(inst, "Odd Cafe", url)


def test_names_resolving_to_internal_addresses_are_refused(inst: Institution) -> None:
    table = {
        f"n{i}.attacker.example": [addr]
        for i, addr in enumerate(
            [
                "127.0.0.2",
                "127.0.0.53",
                "169.254.169.254",
                "10.1.2.3",
                "172.20.0.5",
                "192.168.0.10",
                "100.100.100.200",
                "0.0.0.0",
                "::1",
                "::",
                "fd00::1",
                "fe80::1",
                "::ffff:127.0.0.1",
                "::ffff:10.0.0.1",
                "64:ff9b::a00:1",
                "2002:a00:1::",
                "224.0.0.251",
                "ff02::fb",
            ]
        )
    }
    # one bad answer among good ones spoils the name
    table["mixed.attacker.example"] = ["93.184.215.14", "127.0.0.2"]
    table["mixed6.attacker.example"] = ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::1"]
    # an answer that is not an address at all
    table["junk.attacker.example"] = ["not-an-ip"]
    inst.webhook_targets = _policy(Resolver(table))
    for name in table:
        with pytest.raises(WebhookUrlRefused) as info:
            merchant(inst, "Evil Cafe", f"https://{name}/hook")
        assert name in info.value.message
    # names that do not resolve, or resolve to nothing, are refused too
    for name in ("nowhere.attacker.example",):
        with pytest.raises(WebhookUrlRefused, match="does not resolve"):
            merchant(inst, "Evil Cafe", f"https://{name}/hook")


def test_public_targets_are_accepted_and_normalised(inst: Institution) -> None:
    inst.webhook_targets = TargetPolicy(
        resolver=Resolver({"hooks.shop.example": ["93.184.215.14", "2606:2800:21f::1"]})
    )
    mid = merchant(inst, "Fine Cafe", "HTTPS://Hooks.Shop.Example:443/a/b?x=1&y=%20")
    assert inst.merchants.get(mid).webhook_url == "https://hooks.shop.example/a/b?x=1&y=%20"
    for url, stored in (
        ("https://8.8.8.8:8443/h", "https://8.8.8.8:8443/h"),
        ("https://[2606:4700:4700::1111]/h", "https://[2606:4700:4700::1111]/h"),
        ("https://[2606:4700:4700:0:0:0:0:1111]", "https://[2606:4700:4700::1111]/"),
        ("https://[64:ff9b::808:808]/", "https://[64:ff9b::808:808]/"),  # NAT64 of a public one
        ("https://hooks.shop.example?q=1", "https://hooks.shop.example/?q=1"),
    ):
        assert inst.merchants.set_webhook(mid, url).webhook_url == stored
    assert inst.merchants.set_webhook(mid, None).webhook_url is None


def test_the_allow_list_is_exact(inst: Institution) -> None:
    """Allowing 127.0.0.1 allows neither its neighbours nor its IPv6 disguises."""
    inst.webhook_targets = _policy(Resolver())
    assert merchant(inst, "Ok", "http://127.0.0.1:8080/")
    for url in (
        "http://127.0.0.2:8080/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://[64:ff9b::7f00:1]:8080/",
        "http://[2002:7f00:1::]:8080/",
    ):
        with pytest.raises(WebhookUrlRefused):
            merchant(inst, "Evil", url)
    inst.webhook_targets = _policy(Resolver(), http=False)
    with pytest.raises(WebhookUrlRefused, match="https"):
        merchant(inst, "Plain", "http://127.0.0.1:8080/")
    inst.webhook_targets = _policy(Resolver(), allow=())
    with pytest.raises(WebhookUrlRefused, match="loopback"):
        merchant(inst, "Loop", "http://127.0.0.1:8080/")


# --- on every connection ----------------------------------------------------------------------


def test_delivery_goes_to_the_checked_address_with_the_name_in_host(inst: Institution) -> None:
    rx = Listener(answer(204))
    try:
        dns = Resolver({"hooks.test": ["127.0.0.1"]})
        inst.webhook_targets = _policy(dns)
        mid = merchant(inst, "Named", f"http://hooks.test:{rx.port}/in?x=1")
        ids = emit(inst, mid, 3)
        d = Dispatch(inst, inst.webhook_targets)
        assert d.run_until(lambda: all(any(a.ok for a in d.of(e)) for e in ids))
    finally:
        rx.close()
    assert all(r.header("Host") == f"hooks.test:{rx.port}" for r in rx.requests)
    assert all(r.head.startswith(b"POST /in?x=1 HTTP/1.1\r\n") for r in rx.requests)
    for r in rx.requests:
        assert (
            verify_webhook(r.body, r.header("Safescan-Signature") or "", trust(inst))["id"] in ids
        )
    # one lookup per connection, none reused from registration
    assert dns.calls.count("hooks.test") == 1 + rx.connections
    assert all(a.peer == "127.0.0.1" and a.ok for _, a in d.attempts)


def test_rebinding_after_registration_is_refused_on_connect(inst: Institution) -> None:
    rx = Listener(answer(204))
    try:
        dns = Resolver({"rebind.test": ["127.0.0.1"]})
        inst.webhook_targets = _policy(dns)
        mid = merchant(inst, "Rebinder", f"http://rebind.test:{rx.port}/hook")
        d = Dispatch(inst, inst.webhook_targets)
        first = emit(inst, mid)[0]
        assert d.run_until(lambda: len(d.of(first)) >= 1)
        assert d.of(first)[0].ok and rx.connections == 1
        # the attacker's DNS now answers with internal addresses (only ones on this machine,
        # so that even a broken guard sends nothing off it): each is refused before connecting
        for answers in (
            ["::ffff:127.0.0.1"],
            ["127.0.0.1", "::ffff:127.0.0.1"],
            ["::ffff:7f00:1", "127.0.0.1"],
            ["127.0.0.2"],
            ["0.0.0.0"],
            ["::1"],
            [],
        ):
            dns.table["rebind.test"] = answers
            eid = emit(inst, mid)[0]
            assert d.run_until(lambda e=eid: len(d.of(e)) >= 2)  # tried, retried
            tried = d.of(eid)
            assert all(a.error_kind == "refused" and a.peer is None for a in tried), tried
            assert events(inst, [eid])[eid].webhook_state == "pending"
            assert "refused" in (events(inst, [eid])[eid].last_error or "")
        assert rx.connections == 1  # nothing after the rebinding reached the receiver
    finally:
        rx.close()
    assert d.dispatcher.stats.refused >= 14


def test_a_url_stored_under_older_rules_is_checked_again_on_connect(inst: Institution) -> None:
    """No allow-list: loopback is refused at connect time although the URL is in the database
    (registered before the rules, or resolving elsewhere then)."""
    rx = Listener(answer(204))
    try:
        dns = Resolver({"old.test": ["127.0.0.1"]})
        inst.webhook_targets = _policy(dns, allow=())
        a, b = merchant(inst, "Old A"), merchant(inst, "Old B")
        store_url(inst, a, f"http://old.test:{rx.port}/hook")
        store_url(inst, b, f"http://127.0.0.1:{rx.port}/hook")
        ids = emit(inst, a, 2) + emit(inst, b, 2)
        d = Dispatch(inst, inst.webhook_targets)
        assert d.run_until(lambda: all(len(d.of(e)) >= 2 for e in ids))
    finally:
        rx.close()
    assert rx.connections == 0
    assert all(a.error_kind == "refused" for _, a in d.attempts)


def test_the_connection_uses_the_answer_it_checked(inst: Institution) -> None:
    """A resolver that alternates a good answer with a bad one (127.0.0.2, where nothing
    listens): an implementation that checked one lookup and connected by name (a second
    lookup) would fail every other delivery. Every delivery arrives, one lookup each."""
    rx = Listener(answer(204))
    try:
        dns = Resolver({"flip.test": ["127.0.0.1"]})
        inst.webhook_targets = _policy(dns)
        mid = merchant(inst, "Flip", f"http://flip.test:{rx.port}/hook")  # lookup 1 (good)
        dns.script["flip.test"] = [["127.0.0.1"], ["127.0.0.2"]]  # then good, bad, good, ...
        ids = emit(inst, mid, 6)
        d = Dispatch(inst, inst.webhook_targets)
        assert d.run_until(lambda: all(any(a.ok for a in d.of(e)) for e in ids), timeout=60)
    finally:
        rx.close()
    lookups = dns.calls.count("flip.test") - 1
    assert rx.connections == len(rx.requests) >= 6
    # every connection made was to the answer checked for it: refusals never connected
    refused = [a for _, a in d.attempts if a.error_kind == "refused"]
    assert all(a.peer is None for a in refused)
    assert lookups == rx.connections + len(refused)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(inst: Institution, status: int) -> None:
    inside = Listener(answer(204))  # an "internal" service the redirect points at
    targets = [
        f"http://127.0.0.1:{inside.port}/steal",
        f"http://0.0.0.0:{inside.port}/latest/meta-data/iam/security-credentials/",
        f"http://[::ffff:127.0.0.1]:{inside.port}/",
        f"http://localhost:{inside.port}/",
    ]
    rxs = [Listener(redirect(t, status)) for t in targets]
    try:
        inst.webhook_targets = _policy(Resolver())
        ids = []
        for i, rx in enumerate(rxs):
            ids += emit(inst, merchant(inst, f"Redirect {i}", rx.url), 1)
        d = Dispatch(inst, inst.webhook_targets)
        assert d.run_until(lambda: all(len(d.of(e)) >= 2 for e in ids))
    finally:
        for rx in [inside, *rxs]:
            rx.close()
    assert inside.connections == 0
    for e in ids:
        assert all(a.status == status and a.error == f"HTTP {status}" for a in d.of(e))
        assert events(inst, [e])[e].webhook_state == "pending"  # a redirect is not delivery


def test_proxy_settings_from_the_environment_are_ignored(
    inst: Institution, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, rx = Listener(answer(200)), Listener(answer(204))
    try:
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        inst.webhook_targets = _policy(Resolver())
        ids = emit(inst, merchant(inst, "Direct", rx.url), 2)
        d = Dispatch(inst, inst.webhook_targets)
        assert d.run_until(lambda: all(any(a.ok for a in d.of(e)) for e in ids))
    finally:
        proxy.close()
        rx.close()
    assert proxy.connections == 0
    assert all(events(inst, ids)[e].webhook_state == "delivered" for e in ids)


# --- TLS: the name is what is verified, the checked address is where it goes -------------------


def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
    inst: Institution, tmp_path: Path
) -> None:
    ca = make_ca()
    client = ssl.create_default_context(
        cadata=ca[1].public_bytes(serialization.Encoding.PEM).decode()
    )
    good = Listener(answer(204), tls=server_tls(tmp_path, ca, ["hooks.test"]))
    wrong = Listener(answer(204), tls=server_tls(tmp_path, ca, ["other.test"]))
    self_signed = Listener(answer(204), tls=server_tls(tmp_path, None, ["hooks.test"]))
    try:
        dns = Resolver({"hooks.test": ["127.0.0.1"]})
        inst.webhook_targets = _policy(dns, http=False)
        ok = emit(inst, merchant(inst, "TLS Cafe", f"https://hooks.test:{good.port}/tls"), 2)
        bad = emit(inst, merchant(inst, "Wrong Name", f"https://hooks.test:{wrong.port}/"), 1)
        bad += emit(
            inst, merchant(inst, "Self Signed", f"https://hooks.test:{self_signed.port}/"), 1
        )
        d = Dispatch(inst, inst.webhook_targets, ssl_context=client)
        assert d.run_until(
            lambda: (
                all(any(a.ok for a in d.of(e)) for e in ok) and all(len(d.of(e)) >= 2 for e in bad)
            )
        )
    finally:
        for lst in (good, wrong, self_signed):
            lst.close()
    assert {r.sni for r in good.requests} == {"hooks.test"}
    assert {r.header("Host") for r in good.requests} == {f"hooks.test:{good.port}"}
    assert all(events(inst, ok)[e].webhook_state == "delivered" for e in ok)
    assert wrong.requests == [] and self_signed.requests == []
    for e in bad:
        assert all(a.error_kind == "tls" for a in d.of(e)), d.of(e)


# --- through the API of a real server ----------------------------------------------------------

API_ATTACKS = [u for u, _ in INTERNAL_LITERALS[::3]] + [
    "http://localhost:8080/",
    "http://LocalHost./",
    "http://metadata.google.internal/computeMetadata/v1/",
    "https://user@127.0.0.1:8080/",
    "gopher://127.0.0.1:6379/_",
    "file:///etc/passwd",
    "http://127.0.0.1:8080/\r\nHost: evil",
]


def test_the_api_refuses_internal_webhook_targets_and_changes_nothing(world: World) -> None:
    ok_url = "http://127.0.0.1:9999/ok"  # the test server allow-lists 127.0.0.1 only
    m = world.merchant("Api Victim", webhook_url=ok_url)
    base = {"name": "Evil", "city": "X", "country": "DE", "mcc": 5814, "settlement_account": "X"}
    for url in API_ATTACKS:
        r = m.request("PUT", "/v1/merchant/webhook", {"url": url})
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"]["code"] in ("webhook_url_refused", "invalid_request"), r.text
        r = world.admin("POST", "/v1/admin/merchants", {**base, "webhook_url": url})
        assert r.status_code == 400, (url, r.text)
    assert m.request("GET", "/v1/merchant").json()["webhook_url"] == ok_url
    # the refusal names the reason
    r = m.request("PUT", "/v1/merchant/webhook", {"url": "http://169.254.169.254/"})
    assert r.json()["error"]["code"] == "webhook_url_refused"
    assert "link-local" in r.json()["error"]["message"] and r.json()["error"]["param"] == "url"
