"""docs/first-payment.md, followed to the letter: every ``sh`` block's commands, in order, as
real processes (institution, key carrier, terminal) on 127.0.0.1.

Only what a test cannot do like a person is adapted: the ``export PATH`` / ``cd`` lines are the
test's own set-up, free ports replace 8080 and 7300, the ``<PLACEHOLDERS>`` get the values the
earlier commands printed (found the way a person would read them), and what is typed at the
prompts (PIN twice; "y" and the PIN) comes on standard input.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from safescan.procs import free_port
from tests.logread import written

DOC = Path(__file__).resolve().parents[2] / "docs" / "first-payment.md"
PIN = "482916"
BIN = str(Path(sys.executable).parent)

# what a person reads off a command's output, to paste into a later command
CAPTURES = {
    "ADMIN_TOKEN": re.compile(r"\b(adm_[A-Za-z0-9_\-]+)"),
    "CUSTOMER_ID": re.compile(r"customer (C[0-9A-Z]{6,}) \(.*\) created"),
    "TOKEN": re.compile(r"^(enr_[A-Za-z0-9_\-]+)$", re.M),
    "ROOT_KEY": re.compile(r"^(\d+:[0-9a-f]{64})$", re.M),
    # the same shape: `carrier factory init` prints it (used at once), `root-keys` later
    "FACTORY_KEY": re.compile(r"^(\d+:[0-9a-f]{64})$", re.M),
    "ORDER_ID": re.compile(r"Order ([0-9A-Z]{8,})"),
}
TYPED = {  # command start -> what the person types at its prompts
    "safescan wallet enroll": f"{PIN}\n{PIN}\n",
    "safescan wallet scan": f"y\n{PIN}\n",
}


def commands(doc: str) -> list[str]:
    """Every command of every ``sh`` block, continuation lines joined."""
    out: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", doc, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(line.strip())
    return out


@dataclass
class Terminal:
    """The person at the keyboard: environment, background windows, what they have read."""

    cwd: Path
    ports: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    windows: list[subprocess.Popen[str]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)

    def prepare(self, command: str) -> str:
        command = command.split("  #")[0].strip()  # a trailing comment
        for old, new in self.ports.items():
            command = command.replace(old, new)
        for name in re.findall(r"<([A-Z_]+)>", command):
            assert name in self.seen, f"the page never printed <{name}> before: {command}"
            command = command.replace(f"<{name}>", self.seen[name])
        return command

    def read(self, text: str) -> None:
        for name, pattern in CAPTURES.items():
            found = pattern.search(text)
            if found:
                self.seen[name] = found.group(1)

    def export(self, command: str) -> None:
        name, _, value = command.removeprefix("export ").partition("=")
        expanded = subprocess.run(
            ["bash", "-c", f'printf %s {value}'], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        self.env[name] = expanded

    def run(self, command: str) -> str:
        typed = next((v for k, v in TYPED.items() if command.startswith(k)), None)
        out = subprocess.run(
            ["bash", "-c", command], cwd=self.cwd, env=self.env, input=typed or "",
            capture_output=True, text=True, timeout=120, start_new_session=True, check=False,
        )  # fmt: skip
        text = out.stdout + out.stderr
        assert out.returncode == 0, f"{command}\n{text}"
        self.read(out.stdout)
        self.outputs[command] = text
        self.history.append((command, text))
        return text

    def open_window(self, command: str, ready: str, name: str) -> Path:
        log = self.cwd / f"{name}.log"
        with log.open("w") as handle:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], cwd=self.cwd, env=self.env,
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.windows.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = written(log)  # whole lines: an order id is never read half written
            if re.search(ready, text):
                self.read(text)
                return log
            assert proc.poll() is None, f"{command} stopped:\n{text}"
            time.sleep(0.1)
        raise AssertionError(f"{command} never showed {ready!r}:\n{log.read_text()}")

    def close(self) -> None:
        for proc in self.windows:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in each window
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


WINDOWS = {  # the commands that keep running: what they print when they are ready
    "safescan institution serve": ("listening on", "institution"),
    "safescan carrier serve": ("READY tcp://", "carrier"),
    "safescan pos order": (r"Order [0-9A-Z]{8,}", "terminal"),
}


def test_the_first_payment_walkthrough_works_as_written(tmp_path: Path) -> None:
    doc = DOC.read_text()
    steps = commands(doc)
    assert [step.split("  #")[0].strip() for step in steps[:2]] == [
        'export PATH="$PWD/.venv/bin:$PATH"',
        "mkdir -p ~/first-payment && cd ~/first-payment",
    ]
    institution_port, carrier_port = free_port(), free_port()
    ports = {
        "127.0.0.1:8080": f"127.0.0.1:{institution_port}",
        "--port 8080": f"--port {institution_port}",
        "127.0.0.1:7300": f"127.0.0.1:{carrier_port}",
    }
    me = Terminal(tmp_path, ports)
    me.env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_")},
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    logs: dict[str, Path] = {}
    try:
        for raw in steps[2:]:
            command = me.prepare(raw)
            if command.startswith("export "):
                me.export(command)
                continue
            window = next((w for w in WINDOWS if command.split()[:3] == w.split()), None)
            if window is not None:
                assert "# keeps running" in raw, f"say that {window} keeps running: {raw}"
                ready, name = WINDOWS[window]
                logs[name] = me.open_window(command, ready, name)
                if name == "terminal":
                    assert (tmp_path / "order.png").is_file()
                continue
            me.run(command)
        out = me.outputs
        said = "\n".join(text for _, text in me.history)
        for expected in (
            "credited 50.00 EUR",
            "enrolled: key carrier",
            "PAID 8.80 EUR to Café Lumière, Paris",
            "41.20 EUR",
            "audit passed",
            "refunded 1.80 EUR",
            "refund 1.80 EUR on payment",
        ):
            assert expected in said, expected
        balances = [v for k, v in me.history if k == "safescan wallet balance"]
        assert [b.split("EUR")[0].split()[-1] for b in balances] == ["50.00", "41.20", "43.00"]
        assert "PAID" in next(v for k, v in out.items() if k.startswith("safescan pos orders"))
        terminal = me.windows[-1]
        assert terminal.wait(60) == 0  # the merchant's terminal ended after the payment
        assert "PAID 8.80 EUR" in logs["terminal"].read_text()
        access = []  # the institution's JSON access lines (docs/operations.md, logs)
        for raw_line in logs["institution"].read_text().splitlines():
            with contextlib.suppress(ValueError):
                access.append(json.loads(raw_line))
        assert any(
            isinstance(a, dict)
            and (a.get("method"), a.get("route"), a.get("status")) == ("POST", "/v1/payments", 201)
            for a in access
        ), "the institution's access log shows the payment"
    finally:
        me.close()
