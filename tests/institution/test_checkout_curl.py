"""The curl lines of docs/checkout.md, run as written (bash and curl, a real server on 127.0.0.1
over HTTPS with its CA): make a session with a secret API key, read it, cancel it. Only the
lines starting ``SK=``, ``INST=`` and ``ID=`` get the test's values."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.institution.harness import World

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkout.md"

if shutil.which("curl") is None:
    pytest.skip("the documented commands need curl", allow_module_level=True)


def documented_lines() -> tuple[str, str]:
    """The ``sh`` block under "### curl": what comes before ``ID=`` and from ``ID=`` on."""
    text = DOC.read_text()
    block = re.search(r"### curl\n.*?```sh\n(.*?)```", text, re.S)
    assert block is not None, "docs/checkout.md has no curl block"
    first, sep, rest = block.group(1).partition("\nID=")
    assert sep, "the curl block sets ID="
    return first, "ID=" + rest


def run(script: str, ca: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CURL_CA_BUNDLE": str(ca)}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def json_documents(text: str) -> list[dict[str, object]]:
    """The JSON objects curl printed one after the other."""
    decoder, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        doc, i = decoder.raw_decode(text, i)
        out.append(doc)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def set_line(script: str, name: str, value: str) -> str:
    out, n = re.subn(rf"(?m)^{name}=\S*", f"{name}={value}", script)
    assert n == 1, f"the curl block sets {name}= once"
    return out


def test_the_documented_curl_commands_work(world: World) -> None:
    m = world.merchant("Curl Shop")
    r = m.request("POST", "/v1/merchant/api-keys", {"scopes": ["checkout:read", "checkout:write"]})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    first, rest = documented_lines()
    first = set_line(set_line(first, "SK", key), "INST", world.server.base_url)
    made = run(first, world.server.ca)
    assert made.returncode == 0, made.stderr + made.stdout
    session = json.loads(made.stdout)
    assert session["status"] == "open" and session["total"] == 2500
    assert session["success_url"] == f"https://shop.example/done?session={session['id']}"
    # the rest of the block runs in the same shell variables as the first part
    script = "\n".join(
        [f"SK={key}", f"INST={world.server.base_url}", set_line(rest, "ID", session["id"])]
    )
    done = run(script, world.server.ca)
    assert done.returncode == 0, done.stderr + done.stdout
    answers = json_documents(done.stdout)
    assert [a["status"] for a in answers] == ["open", "canceled"], done.stdout
    # and a key without the checkout scopes cannot make one (the doc's command, another key)
    r = m.request("POST", "/v1/merchant/api-keys", {"scopes": ["orders:read"]})
    other = set_line(set_line(first, "SK", r.json()["key"]), "INST", world.server.base_url)
    refused = run(other, world.server.ca)
    assert refused.returncode != 0 and "insufficient_scope" in refused.stdout
