"""`safescan cluster` refuses bad input with a clear error and changes nothing (no cluster is
started by these tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safescan.cluster import ClusterError, ClusterSpec, Tuning
from safescan.cluster.render import etcd_argv, haproxy_config, patroni_config
from safescan.cluster.spec import SPEC_FILE, load_or_create
from safescan.cluster.tls import node_tls


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safescan.cluster", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _error(out: subprocess.CompletedProcess[str]) -> str:
    """The error message of a failed command (its one JSON object), after checking its form."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    err = json.loads(out.stdout)["error"]
    assert err["type"] == "ClusterError" and err["code"] == "cluster_error"
    return str(err["message"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ttl", "5", "--loop-wait", "1", "--retry-timeout", "3"],
            "loop_wait + 2 * retry_timeout",
        ),
        (["--ttl", "0"], "must be positive"),
        (["--base-port", "80"], "base port"),
        (["--base-port", "65500"], "base port"),
        (["--api-processes", "0"], "API processes"),
        (["--api-processes", "12"], "API processes"),
        (["--public-url", "https://pay.example.com/shop"], "--public-url: public_url is a"),
    ],
)
def test_up_refuses_settings_that_cannot_work_and_creates_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    state = tmp_path / "state"
    assert message in _error(_cli("up", "--state", str(state), *args))
    assert not state.exists()


@pytest.mark.parametrize("command", [["down"], ["status"], ["kill", "primary"], ["kill", "etcd0"]])
def test_commands_on_a_directory_without_a_cluster_say_so(
    tmp_path: Path, command: list[str]
) -> None:
    assert "no cluster in" in _error(_cli(*command, "--state", str(tmp_path)))


def test_a_corrupt_spec_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / SPEC_FILE).write_text("{not json")
    assert "is not a cluster spec" in _error(_cli("status", "--state", str(tmp_path)))


def test_settings_of_an_existing_cluster_cannot_change_under_it(tmp_path: Path) -> None:
    spec = load_or_create(tmp_path, ClusterSpec(state_dir=tmp_path, base_port=30000))
    assert json.loads((tmp_path / SPEC_FILE).read_text())["base_port"] == 30000
    with pytest.raises(ClusterError, match="other settings"):
        load_or_create(tmp_path, ClusterSpec(state_dir=tmp_path, base_port=31000))
    assert load_or_create(tmp_path, None) == spec


def test_kill_of_a_process_that_does_not_run_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path, ClusterSpec(state_dir=tmp_path, base_port=30000))
    for name in ("api0", "etcd1", "patroni2", "haproxy"):
        assert "is not running" in _error(_cli("kill", name, "--state", str(tmp_path)))
    for name in ("nonsense", "api2", "etcd3", "postgres", "../run/api0"):
        assert "no process" in _error(_cli("kill", name, "--state", str(tmp_path)))
    assert "no running primary" in _error(_cli("kill", "primary", "--state", str(tmp_path)))


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (the state's parents are checked for postgres)"
)
def test_a_state_directory_postgres_cannot_enter_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    out = _cli("up", "--state", str(locked / "state"), "--base-port", "30000")
    assert "cannot enter" in _error(out)
    assert not (locked / "state").exists()


def test_rendered_configuration_keeps_the_guarantees() -> None:
    """The settings the guarantees rest on (docs/operations.md) are the ones rendered."""
    spec = ClusterSpec(state_dir=Path("/x"), base_port=30000, tuning=Tuning())
    from safescan.cluster.render import HaproxyTls, Secrets

    s = Secrets("a", "b", "c", "d", "e", "f")
    cfg = patroni_config(spec, 0, Path("/x/pg/pg0"), Path("/usr/lib/postgresql/15/bin"), s)
    dcs = cfg["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is True
    assert dcs["synchronous_node_count"] == 1 and dcs["primary_start_timeout"] == 0
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert "data-checksums" in cfg["bootstrap"]["initdb"]
    hba = cfg["postgresql"]["pg_hba"]
    # TCP only over TLS: every host line is hostssl on loopback, and no TLS is rejected
    assert all(
        line.startswith("local ") or (line.startswith("hostssl ") and "127.0.0.1/32" in line)
        for line in hba[:-1]
    )
    assert hba[-1] == "hostnossl all all all reject"
    assert not any(" trust" in line or line.startswith("host ") for line in hba)
    params = cfg["postgresql"]["parameters"]
    assert params["ssl"] == "on" and params["ssl_min_protocol_version"] == "TLSv1.2"
    assert params["ssl_cert_file"] == "/x/pg/pg0/tls/server.pem"
    for role in ("superuser", "replication"):
        auth = cfg["postgresql"]["authentication"][role]
        assert auth["sslmode"] == "verify-full" and auth["sslrootcert"] == "/x/pg/pg0/tls/ca.pem"
    rest, etcd = cfg["restapi"], cfg["etcd"]
    assert rest["certfile"] == "/x/pg/pg0/tls/server.pem" and rest["cafile"].endswith("ca.pem")
    assert etcd["protocol"] == "https" and etcd["cacert"] == "/x/pg/pg0/tls/ca.pem"
    assert etcd["cert"] and etcd["key"]
    argv = etcd_argv(spec, 0, Path("/x/etcd/etcd0"), "t", node_tls(Path("/x/pg/pg0")))
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
    assert not any("http://" in a for a in argv)
    tls = HaproxyTls(Path("/x/haproxy/api-frontend.pem"), Path("/x/haproxy/ca.pem"))
    text = haproxy_config(spec, Path("/x/haproxy"), tls, "p" * 20)
    assert "option httpchk GET /primary" in text and "on-marked-down shutdown-sessions" in text
    pg_servers = [ln for ln in text.split("listen api")[0].splitlines() if "server pg" in ln]
    assert pg_servers and all(
        f"check-ssl verify required ca-file {tls.ca_file} verifyhost localhost" in ln
        for ln in pg_servers
    )
    # the API hop: TLS from the clients (HAProxy's certificate) and to every API process,
    # verified against the cluster's CA and name; a process is in rotation only on /readyz 200
    api = text.split("listen api", 1)[1]
    assert f"ssl crt {tls.frontend_pem}" in api
    assert f"ssl verify required ca-file {tls.ca_file}" in api and "verifyhost localhost" in api
    assert "check-ssl" in api and "verify none" not in text
    assert "uri /readyz" in api and "http-check expect status 200" in api
    assert all(" check" in line for line in api.splitlines() if line.strip().startswith("server"))
    assert "retry-on conn-failure" in text
    assert "0.0.0.0" not in text and "*:" not in text


def test_a_base_port_in_the_kernels_ephemeral_range_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block of cluster ports inside net.ipv4.ip_local_port_range could be taken by any
    outgoing connection between the check and a child's bind (API process 0's 44350 was):
    refused before anything is written, with the setting named."""
    from safescan import procs

    f = tmp_path / "ip_local_port_range"
    f.write_text("32768 60999")
    monkeypatch.setattr(procs, "EPHEMERAL_RANGE_FILE", f)
    for base in (44300, 32760, 60990):  # inside, straddling the start, straddling the end
        with pytest.raises(ClusterError, match="ip_local_port_range"):
            load_or_create(tmp_path / str(base), ClusterSpec(state_dir=tmp_path, base_port=base))
        assert not (tmp_path / str(base)).exists()
    for base in (7400, 32700, 61000):  # the default, just below, just above
        load_or_create(tmp_path / str(base), ClusterSpec(state_dir=tmp_path, base_port=base))


def test_a_port_grabbed_after_the_pick_stops_the_start_with_a_typed_error(
    tmp_path: Path,
) -> None:
    """What the ephemeral range cannot exclude: another program binds one of the cluster's
    ports on purpose after the pick. The API process is then not started, and `up` fails at
    once with a ClusterError naming the port (never a hang, never another port silently)."""
    import socket

    from safescan.cluster.spec import free_base_port
    from safescan.cluster.supervisor import Cluster

    spec = load_or_create(tmp_path, ClusterSpec(state_dir=tmp_path, base_port=free_base_port()))
    (tmp_path / "run").mkdir()
    (tmp_path / "logs").mkdir()
    port = spec.ports.api_process(0)
    taken = f"port {port} \\(needed by api0\\) is in use"
    with socket.create_server(("127.0.0.1", port)), pytest.raises(ClusterError, match=taken):
        Cluster(spec)._start_apis()
    assert list((tmp_path / "run").iterdir()) == []  # nothing was started
