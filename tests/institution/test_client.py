"""The typed API client (``safescan.client``) against a real institution: each service's
typed objects, the institution's typed errors, and what a malformed answer becomes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safescan.api.errors import NotFound, Unauthenticated
from safescan.api.wire import PaymentRequest
from safescan.client import AdminClient, MerchantClient, WalletClient
from safescan.client.errors import InstitutionProtocolError, InstitutionUnreachable
from safescan.code import LineItem, SigningKey
from tests.institution.harness import World
from tests.institution.pg import free_port


@pytest.fixture(scope="module")
def admin(world: World) -> Iterator[AdminClient]:
    with AdminClient(world.server.base_url, world.admin_token) as client:
        yield client


def test_admin_services_return_typed_objects(admin: AdminClient) -> None:
    alice = admin.customers.create("Alice Client")
    assert alice.name == "Alice Client" and alice.balance("EUR") == 0 and alice.carriers == ()
    funded = admin.customers.fund(alice.id, "EUR", 12_345)
    assert funded.balance("EUR") == 12_345 == admin.customers.balance(alice.id, "EUR")
    assert admin.customers.get(alice.id).to_json()["id"] == alice.id
    page = admin.customers.list(limit=500)
    assert alice.id in {c.id for c in page.customers}
    row = next(c for c in page.customers if c.id == alice.id)
    assert row.carrier_count == 0 and row.balance("EUR") == 12_345
    token = admin.enrollment_tokens.issue(alice.id, ttl_seconds=600)
    assert token.customer_id == alice.id and token.token.startswith("enr_")


def test_admin_refusals_are_the_institutions_typed_errors(admin: AdminClient, world: World) -> None:
    with pytest.raises(NotFound):
        admin.customers.get("C-no-such-customer")
    with pytest.raises(NotFound):
        admin.enrollment_tokens.issue("C-no-such-customer")
    with pytest.raises(NotFound):
        admin.carriers.revoke(987_654)
    with AdminClient(world.server.base_url, "adm_wrong") as wrong, pytest.raises(Unauthenticated):
        wrong.customers.list()


def test_merchant_and_wallet_services_pay_and_refund(admin: AdminClient, world: World) -> None:
    key = SigningKey.generate()
    created = admin.merchants.create(
        name="Client Cafe",
        city="Berlin",
        country="DE",
        mcc=5814,
        settlement_account="DE89370400440532013000",
        api_public_key=key.public_key,
    )
    profile = admin.merchants.get(created.id)
    assert profile.name == "Client Cafe" and profile.api_public_key == key.public_key.raw
    assert profile.status == "active" and profile.mcc == 5814
    trust = admin.keys.root_keys()
    cid = world.customer({"EUR": 100_000})
    carrier = world.carrier(cid)
    with (
        MerchantClient(world.server.base_url, created.id, key, trust) as api,
        WalletClient(world.server.base_url) as wallet,
    ):
        order = api.orders.create([LineItem("Tea", 2, 250)], currency="EUR")
        assert order.total == 500 and order.items == (LineItem("Tea", 2, 250),)
        assert api.orders.get(order.order_id).state == "CREATED"
        assert order.order_id in {o.order_id for o in api.orders.list(limit=100).orders}
        status = wallet.codes.status(order.code)
        assert status is not None and status.state == "payable" and status.order_state == "CREATED"
        request = PaymentRequest(order.code, carrier.authorize(order.code).to_bytes())
        paid = wallet.payments.create(request, idempotency_key="pay-client-1")
        again = wallet.payments.lookup(request, idempotency_key="pay-client-1")
        assert again.outcome == "succeeded" and again.payment == paid
        receipt = api.payments.verified_receipt(paid.payment_id, order)
        assert receipt.amount == 500
        refund = api.refunds.create(order.order_id, 200, reason="cold", idempotency_key="r-1")
        looked = api.refunds.lookup(order.order_id, "r-1", 200, reason="cold")
        assert looked.outcome == "succeeded" and looked.refund == refund
        assert refund.amount == 200 and refund.order_state == "PARTIALLY_REFUNDED"
        other = api.orders.create([LineItem("Cake", 1, 300)], currency="EUR")
        assert api.orders.close(other.order_id).state == "CLOSED"
        assert wallet.revocations.signed("merchant") and api.keys.scheme_key_list()


class _Liar(BaseHTTPRequestHandler):
    """Answers 200 with whatever the path asks for."""

    def do_GET(self) -> None:
        body = {"/v1/keys": b'{"root_keys": "nope"}', "/v1/admin/customers/C1": b"[1, 2]"}.get(
            self.path, b"not json"
        )
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


def test_malformed_answers_are_protocol_errors_and_no_server_is_unreachable() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with AdminClient(url, "adm_x") as admin:
            for call in (
                admin.keys.root_keys,
                lambda: admin.customers.get("C1"),
                lambda: admin.customers.list(),
            ):
                with pytest.raises(InstitutionProtocolError):
                    call()
    finally:
        server.shutdown()
        server.server_close()
    with AdminClient(url, "adm_x") as gone, pytest.raises(InstitutionUnreachable) as info:
        gone.customers.list()
    assert info.value.maybe_delivered is False  # the connection was refused: never sent
