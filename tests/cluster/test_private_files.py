"""The cluster's secret and configuration files are never written through a planted link
(threat-model row K14). No cluster is started: the writer is called directly.

Before: ``_write_private`` opened its target with ``O_CREAT | O_TRUNC`` and no ``O_NOFOLLOW``,
so a symbolic link planted at ``secrets.json``, ``passphrase``, ``.pgpass`` or ``patroni.yml``
made the supervisor (often root) write the cluster's passwords into the file the link named
and then make it 0600 (a denial of service on, say, ``/etc/passwd``, and the secrets copied to
wherever the planter can read).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
from pathlib import Path

import pytest

from safescan.cluster import ClusterError, ClusterSpec, Tuning, supervisor
from safescan.cluster.procs import ProcessTable, start_time
from safescan.cluster.render import STATS_USER, HaproxyTls, haproxy_config
from safescan.cluster.secretfile import SECRET_FILE_LIMIT
from safescan.cluster.spec import SPEC_FILE, load_or_create, read_spec
from safescan.cluster.supervisor import PUBLIC_URL_ENV, Cluster, _write_private
from safescan.institution.settings import ServerSettings
from tests.fsrace import hard_link_at_open

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


STATS_PASSWORD = "s3cret-stats-password-0123"


def test_the_haproxy_stats_page_listens_on_loopback_only_read_only_and_asks_a_password() -> None:
    """The stats page binds 127.0.0.1, cannot change anything (no ``stats admin``) and asks
    for the generated password (before: none; the refusal of a request without it is
    checked on a real HAProxy in test_api_tls.py and test_failover.py); the admin socket is
    0600. A password HAProxy's configuration could not hold whole is refused."""
    spec = ClusterSpec(state_dir=Path("/x"), base_port=30000, tuning=Tuning())
    tls = HaproxyTls(Path("/x/haproxy/api-frontend.pem"), Path("/x/haproxy/ca.pem"))
    text = haproxy_config(spec, Path("/x/haproxy"), tls, STATS_PASSWORD)
    stats = text.split("listen stats", 1)[1].split("\n\n", 1)[0]
    binds = [ln.split()[1] for ln in stats.splitlines() if ln.strip().startswith("bind")]
    assert binds == [f"127.0.0.1:{spec.ports.stats}"]
    assert f"    stats auth {STATS_USER}:{STATS_PASSWORD}" in stats.splitlines()
    assert "stats admin" not in text
    assert "stats socket" in text and "mode 600 level admin" in text
    assert all(
        ln.split()[1].startswith("127.0.0.1:")
        for ln in text.splitlines()
        if ln.strip().startswith("bind")
    )
    for bad in (
        "",
        "short",
        "with space-0123456789",
        "colon:0123456789abcdef",
        "nl\n0123456789abcdef",
    ):
        with pytest.raises(ClusterError, match="statistics password"):
            haproxy_config(spec, Path("/x/haproxy"), tls, bad)


def _prepared(state: Path, spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """``Cluster._prepare`` run for real (certificates, secrets, configuration files), as a
    plain user: no process is started."""
    monkeypatch.setattr(supervisor, "service_user", lambda: None)
    cluster = Cluster(load_or_create(state, spec))
    cluster._prepare(Path("/usr/lib/postgresql/15/bin"))
    return cluster


@pytest.fixture(scope="module")
def prepared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state directory prepared once for the module (its CA and certificates are the
    costly part), from a ``secrets.json`` written before the statistics password existed."""
    state = tmp_path_factory.mktemp("cluster") / "state"
    spec = ClusterSpec(state_dir=state, base_port=30000)
    old = {
        k: f"old-{k}-0123456789abcdef"
        for k in (
            "superuser_password",
            "replication_password",
            "app_password",
            "rest_password",
            "passphrase",
            "etcd_token",
        )
    }
    (state / "secrets").mkdir(parents=True, mode=0o700)
    (state / "secrets" / "secrets.json").write_text(json.dumps(old))
    with pytest.MonkeyPatch.context() as mp:
        _prepared(state, spec, mp)
    return state


def test_an_older_cluster_gets_a_stats_password_and_a_private_haproxy_cfg(
    prepared_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = _prepared(prepared_state, read_spec(prepared_state), monkeypatch)
    s = cluster.secrets()
    assert s.app_password == "old-app_password-0123456789abcdef"  # the others are kept
    assert len(s.stats_password) >= 16
    cfg = prepared_state / "haproxy.cfg"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600  # it holds the password
    assert f"stats auth {STATS_USER}:{s.stats_password}" in cfg.read_text()
    assert stat.S_IMODE((prepared_state / SPEC_FILE).stat().st_mode) == 0o600
    assert [p.name for p in prepared_state.rglob("*.tmp")] == []
    # the supervisor's own reads send the password (never in a URL)
    decoded = base64.b64decode(cluster.stats_auth().removeprefix("Basic ")).decode()
    assert decoded == f"{STATS_USER}:{s.stats_password}"


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [(None, "https://127.0.0.1:30000"), ("https://Pay.Example.com/", "https://pay.example.com")],
)
def test_the_api_processes_are_given_the_public_url(
    prepared_state: Path, public_url: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API processes' ``[server] public_url``: HAProxy's API frontend, or --public-url
    (normalised), through the environment layer of the institution's settings (the
    cluster's own runs of it: test_failover.py, the links of both processes)."""
    monkeypatch.setenv(PUBLIC_URL_ENV, "https://stale.example")  # the caller's is never passed
    monkeypatch.setattr(supervisor, "service_user", lambda: None)
    spec = ClusterSpec(state_dir=prepared_state, base_port=30000, public_url=public_url)
    env = Cluster(spec)._api_env()
    assert env[PUBLIC_URL_ENV] == expected == Cluster(spec).public_url
    assert ServerSettings(public_url=env[PUBLIC_URL_ENV]).public_url == expected
    stored = ClusterSpec.from_json(spec.to_json(), prepared_state)
    assert stored == spec and stored.hosted_base == expected


@pytest.mark.parametrize(
    "bad",
    [
        "pay.example.com",
        "ftp://pay.example.com",
        "https://pay.example.com/shop",
        "https://user@pay.example.com",
        "https://pay.example.com:99999",
        "https://a b",
    ],
)
def test_a_bad_public_url_is_refused_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ClusterError, match="--public-url"):
        load_or_create(tmp_path / "state", ClusterSpec(state_dir=tmp_path, public_url=bad))
    assert not (tmp_path / "state").exists()


def test_a_crash_while_writing_the_spec_leaves_no_half_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spec, haproxy.cfg and pid files are written whole or not at all (write_atomic):
    a crash (here: the disk fails at the fsync) leaves no file and no temporary copy, and the
    next command says there is no cluster rather than reading half of one."""
    state = tmp_path / "state"

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "disk failed")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk failed"):
        load_or_create(state, ClusterSpec(state_dir=state, base_port=30000))
    monkeypatch.undo()
    assert list(state.iterdir()) == []
    with pytest.raises(ClusterError, match="no cluster in"):
        read_spec(state)


def test_a_damaged_spec_is_a_typed_refusal(tmp_path: Path) -> None:
    """A ``cluster.json`` cut short at any byte (what ``write_text`` could leave after a
    crash), or made of other bytes, is the typed ClusterError naming the file, never a
    traceback or a cluster of default settings."""
    whole = load_or_create(tmp_path, ClusterSpec(state_dir=tmp_path, base_port=30000)).to_json()
    path = tmp_path / SPEC_FILE
    damaged = [whole[:n] for n in range(0, len(whole) - 1, 7)]
    damaged += ["[]", "null", '{"base_port": 30000}', whole.replace('"nodes": 3', '"nodez": 3')]
    for text in damaged:
        path.write_text(text)
        with pytest.raises(ClusterError, match=r"cluster\.json"):
            read_spec(tmp_path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ClusterError, match=r"cluster\.json"):
        read_spec(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"123",
        b"123 ",
        b"123 456",
        b"123 4567",
        b"12x 456\n",
        b"123 456 789\n",
        b"-1 456\n",
        b"0 456\n",
        b"123  456\n",
        b"\x00" * 10,
        b"1" * 70 + b" 1\n",
    ],
)
def test_a_damaged_pid_file_is_a_typed_refusal_never_not_running(
    tmp_path: Path, content: bytes
) -> None:
    """A pid file not exactly ``<pid> <start>\\n`` (cut short, garbled, too long) is the
    typed ClusterError: "not running" would start a second copy beside a live one, or leave
    it running at ``down``. The supervisor writes pid files whole (write_atomic)."""
    table = ProcessTable(tmp_path, tmp_path)
    (tmp_path / "etcd0.pid").write_bytes(content)
    with pytest.raises(ClusterError, match=r"etcd0\.pid(: larger| is damaged)"):
        table.alive("etcd0")
    assert table.pid("api1") is None  # no pid file: not running


def test_a_pid_file_is_read_without_following_a_link(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path, tmp_path)
    me = tmp_path / "real"
    me.write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
    (tmp_path / "haproxy.pid").symlink_to(me)
    with pytest.raises(ClusterError, match="cannot read"):
        table.pid("haproxy")
    os.replace(me, tmp_path / "haproxy.pid")
    assert table.pid("haproxy") == os.getpid()  # a whole file: the process, checked live


@pytest.mark.parametrize(
    "damage", ["huge", "dev_zero_link", "symlink", "hardlink", "directory", "fifo", "empty"]
)
@pytest.mark.parametrize("name", ["admin-token", "secrets.json"])
def test_a_secret_file_is_read_bounded_and_never_through_a_link(
    tmp_path: Path, name: str, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Cluster.admin_token()`` and ``secrets()`` read ``STATE/secrets`` files the supervisor
    wrote itself: at most 64 KiB, never through a symbolic or hard link, only a regular file;
    anything else is the typed ClusterError, whose message never shows the file's contents
    (before: an unbounded ``read_text`` that followed links: ``/dev/zero`` ran the supervisor
    out of memory, a link to another file was sent as the token). No cluster is started."""
    monkeypatch.setattr(supervisor, "service_user", lambda: None)
    cluster = Cluster(ClusterSpec(state_dir=tmp_path / "state"))
    cluster.secrets_dir.mkdir(parents=True, mode=0o700)
    path = cluster.secrets_dir / name
    victim = tmp_path / "victim"
    victim.write_text("victim-contents-q7\n")
    if damage == "huge":
        path.write_text("T" * (SECRET_FILE_LIMIT + 1))
    elif damage == "dev_zero_link":
        path.symlink_to("/dev/zero")
    elif damage == "symlink":
        path.symlink_to(victim)
    elif damage == "hardlink":
        os.link(victim, path)
    elif damage == "directory":
        path.mkdir()
    elif damage == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("" if name == "admin-token" else "{}")
    read = cluster.admin_token if name == "admin-token" else cluster.secrets
    with pytest.raises(ClusterError) as err:
        read()
    assert "victim-contents" not in str(err.value) and "TTTT" not in str(err.value)
    # the file the supervisor writes itself is read as before
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()
    if name == "admin-token":
        _write_private(path, "adm_token-value\n")
        assert cluster.admin_token() == "adm_token-value"


def test_a_hard_link_made_between_a_check_and_the_open_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(review) The secret reader checked the link count with ``lstat`` and opened the file
    after: a hard link made in between was read as the cluster's own token. Here the open makes
    the link first (the attacker winning the race); the count is the opened file's (``fstat``
    in ``read_bounded(single_link=True)``), so the read is the typed ClusterError."""
    monkeypatch.setattr(supervisor, "service_user", lambda: None)
    cluster = Cluster(ClusterSpec(state_dir=tmp_path / "state"))
    cluster.secrets_dir.mkdir(parents=True, mode=0o700)
    path = cluster.secrets_dir / "admin-token"
    _write_private(path, "adm_token-value\n")
    hard_link_at_open(monkeypatch, path, tmp_path / "planted")
    with pytest.raises(ClusterError, match="hard link"):
        cluster.admin_token()


def test_the_clusters_own_files_are_read_bounded_and_never_through_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(review) The spec, PostgreSQL's postmaster.pid, the TLS files and the logs are read
    bounded and never through a symbolic link (before: ``read_text``/``read_bytes`` that
    followed links; a link to ``/dev/zero`` or a FIFO ran the supervisor, often root, out of
    memory or hung it; a link to another file was believed). No cluster is started."""
    from safescan.cluster import tls as cluster_tls
    from safescan.web import pki

    # cluster.json through a link: refused, not read
    state = tmp_path / "state"
    load_or_create(state, ClusterSpec(state_dir=state, base_port=30000))
    (state / SPEC_FILE).rename(tmp_path / "elsewhere.json")
    (state / SPEC_FILE).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ClusterError, match="cannot be read"):
        read_spec(state)
    # postmaster.pid through a link (the service user owns the data directory): not believed
    monkeypatch.setattr(supervisor, "service_user", lambda: None)
    monkeypatch.setattr(supervisor, "cmdline", lambda pid: f"postgres -D {tmp_path}/n/data")
    cluster = Cluster(ClusterSpec(state_dir=tmp_path / "c"))
    monkeypatch.setattr(cluster, "node_dir", lambda i: tmp_path / "n")
    (tmp_path / "n" / "data").mkdir(parents=True)
    (tmp_path / "pm").write_text("4242\n/data\n")
    pm = tmp_path / "n" / "data" / "postmaster.pid"
    pm.symlink_to(tmp_path / "pm")
    assert cluster.postmaster_pid(0) is None
    pm.unlink()
    (tmp_path / "pm").rename(pm)
    assert cluster.postmaster_pid(0) == 4242  # PostgreSQL's own file: read
    # a node certificate through a link is not usable (it is issued anew); the CA is not copied
    ca = pki.TlsDir(tmp_path / "ca")
    pki.create_tls_dir(ca)
    node = cluster_tls.NodeTls(tmp_path / "node")
    cluster_tls.prepare_node(ca, node)
    assert cluster_tls._usable(node)
    node.cert.rename(tmp_path / "server.pem")
    node.cert.symlink_to(tmp_path / "server.pem")
    assert not cluster_tls._usable(node)
    ca.ca_cert.rename(tmp_path / "ca.pem")
    ca.ca_cert.symlink_to(tmp_path / "ca.pem")
    with pytest.raises(ClusterError, match="cannot read the cluster's CA"):
        cluster_tls.prepare_node(ca, node)
    # a log: only its end is read, never through a link
    table = ProcessTable(tmp_path, tmp_path)
    (tmp_path / "etcd0.log").write_bytes(b"x" * (1 << 20) + b"the end\n")
    assert table.log_tail("etcd0", 100).endswith("the end\n")
    assert len(table.log_tail("etcd0", 100)) == 100
    (tmp_path / "etcd0.log").rename(tmp_path / "other.log")
    (tmp_path / "etcd0.log").symlink_to(tmp_path / "other.log")
    assert table.log_tail("etcd0") == ""


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_a_process_log_is_never_appended_through_a_planted_link(tmp_path: Path, kind: str) -> None:
    """(review) The log directory belongs to the service user; the supervisor (often root)
    opened ``logs/NAME.log`` with ``open(.., "ab")``, so a symbolic link planted there made it
    append the child's output to any file. Now a link, a second name or a FIFO is the typed
    ClusterError, and nothing is started."""
    logs = tmp_path / "logs"
    logs.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    if kind == "symlink":
        (logs / "etcd0.log").symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, logs / "etcd0.log")
    else:
        os.mkfifo(logs / "etcd0.log")
    table = ProcessTable(tmp_path, logs)
    with pytest.raises(ClusterError, match=r"etcd0\.log"):
        table.start("etcd0", ["echo", "appended"], env={}, cwd=tmp_path)
    assert victim.read_text() == "victim\n"
    assert not (tmp_path / "etcd0.pid").exists()
    if kind == "symlink":  # the cluster's own log: created, then appended to as before
        (logs / "etcd0.log").unlink()
        for line in (b"one\n", b"two\n"):
            with table._open_log("etcd0") as log:
                log.write(line)
        assert (logs / "etcd0.log").read_bytes() == b"one\ntwo\n"
