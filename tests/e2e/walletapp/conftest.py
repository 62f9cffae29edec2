"""Fixtures of the wallet app's tests: one customer (own key carrier process) and one
``safescan wallet serve`` per test module, and Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Party, World, new_party
from tests.e2e.walletapp.browser import WalletServer, start_wallet_server


def _module_tag(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "")


@pytest.fixture(scope="module")
def party(world: World, request: pytest.FixtureRequest) -> Iterator[Party]:
    """A customer of their own (own key carrier process), for the app."""
    p = new_party(world.stack, _module_tag(request))
    try:
        yield p
    finally:
        p.carrier.stop()


@pytest.fixture(scope="module")
def server(world: World, party: Party, request: pytest.FixtureRequest) -> Iterator[WalletServer]:
    """``safescan wallet serve`` for that customer's wallet."""
    srv = start_wallet_server(world.stack, party.wallet_dir, f"{_module_tag(request)}-serve")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    """Playwright (driving /usr/bin/chromium only)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        yield p
