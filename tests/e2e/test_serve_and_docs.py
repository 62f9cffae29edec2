"""`safescan institution serve` says where it listens and logs each request (without secrets),
and its OpenAPI pages work on a machine without internet (no CDN assets)."""

from __future__ import annotations

import json
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.e2e.conftest import World, chromium_trusts
from tests.e2e.walletapp.browser import bound
from tests.logread import written

CHROMIUM = "/usr/bin/chromium"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _page_urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    # URLs written inside the inline start-up script (spec URL, bundle, presets)
    parser.urls += re.findall(r"""['"]((?:https?:)?//[^'"]+)['"]""", html)
    return parser.urls


def test_serve_prints_where_it_listens_and_logs_requests_without_secrets(world: World) -> None:
    log = world.stack.workdir / "institution.log"
    assert f"listening on {world.base_url}" in written(log)
    admin = world.stack.admin_token
    r = httpx.get(
        world.base_url + "/v1/admin/customers?limit=1&after=SECRET-QUERY",
        headers={"Authorization": f"Bearer {admin}", "X-Request-Id": "serve-test-list-01"},
        timeout=10,
        verify=world.verify,
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "serve-test-list-01"
    httpx.post(
        world.base_url + "/v1/payments",
        json={"code": "SC1:x", "authorization": "AAAA"},
        verify=world.verify,
    )

    def access() -> list[dict[str, object]]:
        docs = [json.loads(x) for x in written(log).splitlines() if x.startswith("{")]
        return [d for d in docs if d.get("event") == "request"]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(d["route"] == "/v1/payments" for d in access()):
            break
        time.sleep(0.1)
    lines = access()
    (listed,) = [d for d in lines if d.get("request_id") == "serve-test-list-01"]
    assert listed["method"] == "GET" and listed["route"] == "/v1/admin/customers"
    assert listed["status"] == 200 and listed["caller"] == "admin"
    assert listed["client"] == "127.0.0.1" and isinstance(listed["duration_ms"], float)
    paid = [d for d in lines if d["route"] == "/v1/payments"]
    assert paid and 400 <= int(paid[-1]["status"]) < 500  # type: ignore[call-overload]
    text = log.read_text(errors="replace")  # all of it, a line being written too
    assert admin not in text and "SECRET-QUERY" not in text and "SC1:x" not in text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_pages_load_nothing_from_another_host(world: World, page: str) -> None:
    r = httpx.get(world.base_url + page, timeout=10, verify=world.verify)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    urls = _page_urls(r.text)
    assert urls, r.text
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        asset = httpx.get(urljoin(world.base_url + page, url), timeout=10, verify=world.verify)
        assert asset.status_code == 200 and asset.content, url
    assert "img-src 'self' data:" in r.headers["content-security-policy"]
    assert "openapi.json" in r.text
    openapi = httpx.get(world.base_url + "/openapi.json", timeout=10, verify=world.verify)
    assert openapi.json()["paths"]


def test_swagger_ui_renders_offline_in_chromium(world: World, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    host = urlsplit(world.base_url).netloc
    elsewhere: list[str] = []

    def route(r: object) -> None:
        request = r.request  # type: ignore[attr-defined]
        if urlsplit(request.url).netloc != host:
            elsewhere.append(request.url)
            r.abort()  # type: ignore[attr-defined]  # no internet here
        else:
            r.continue_()  # type: ignore[attr-defined]

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", *chromium_trusts(world.stack)],
            headless=True,
        )
        try:
            page = bound(browser.new_page())
            page.route("**/*", route)
            page.goto(world.base_url + "/docs")
            page.get_by_text("/v1/account/challenge").first.wait_for(timeout=20_000)
            page.screenshot(path=str(tmp_path / "docs.png"))
            page.goto(world.base_url + "/redoc")
            page.get_by_text("safescan payment institution").first.wait_for(timeout=20_000)
        finally:
            browser.close()
    assert elsewhere == []
