"""The cluster's secret and configuration files are never written through a planted link
(threat-model row K14). No cluster is started: the writer is called directly.

Before: ``_write_private`` opened its target with ``O_CREAT | O_TRUNC`` and no ``O_NOFOLLOW``,
so a symbolic link planted at ``secrets.json``, ``passphrase``, ``.pgpass`` or ``patroni.yml``
made the supervisor (often root) write the cluster's passwords into the file the link named
and then make it 0600 (a denial of service on, say, ``/etc/passwd``, and the secrets copied to
wherever the planter can read).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from safescan.cluster import ClusterSpec, Tuning
from safescan.cluster.render import HaproxyTls, haproxy_config
from safescan.cluster.supervisor import _write_private

SECRET = "app-password-xyz\n"


@pytest.mark.parametrize("where", ["target", "temporary"])
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_link_planted_at_a_secret_file_is_not_written_through(
    tmp_path: Path, where: str, kind: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("the victim's own contents\n")
    victim.chmod(0o644)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    target = secrets_dir / "pgpass"
    planted = target if where == "target" else secrets_dir / "pgpass.tmp"
    if kind == "symlink":
        planted.symlink_to(victim)
    else:
        os.link(victim, planted)
    _write_private(target, SECRET)
    assert victim.read_text() == "the victim's own contents\n"  # not written through
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644  # nor made owner-only
    assert not target.is_symlink() and target.read_text() == SECRET
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not (secrets_dir / "pgpass.tmp").exists()


def test_an_existing_secret_file_is_replaced_whole_and_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "secrets.json"
    target.write_text("x" * 1000)
    target.chmod(0o644)
    _write_private(target, SECRET)
    assert target.read_text() == SECRET and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_haproxy_stats_page_listens_on_loopback_only_and_read_only() -> None:
    """The stats page is plain HTTP without a password: acceptable only because it binds
    127.0.0.1 and cannot change anything (no ``stats admin``); the admin socket is 0600."""
    spec = ClusterSpec(state_dir=Path("/x"), base_port=30000, tuning=Tuning())
    tls = HaproxyTls(Path("/x/haproxy/api-frontend.pem"), Path("/x/haproxy/ca.pem"))
    text = haproxy_config(spec, Path("/x/haproxy"), tls)
    stats = text.split("listen stats", 1)[1].split("\n\n", 1)[0]
    binds = [ln.split()[1] for ln in stats.splitlines() if ln.strip().startswith("bind")]
    assert binds == [f"127.0.0.1:{spec.ports.stats}"]
    assert "stats admin" not in text
    assert "stats socket" in text and "mode 600 level admin" in text
    assert all(
        ln.split()[1].startswith("127.0.0.1:")
        for ln in text.splitlines()
        if ln.strip().startswith("bind")
    )
