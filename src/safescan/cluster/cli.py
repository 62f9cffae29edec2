"""`safescan cluster up | down | status | kill`: the HA cluster on loopback.

Every command takes ``--json`` (one JSON object on stdout; on failure
``{"error": {"type", "code", "message"}}`` and exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safescan.cluster.errors import ClusterError
from safescan.code.cli_app import new_app
from safescan.code.cli_options import JsonOpt
from safescan.code.output import emit_json, fail, say

cluster_app = new_app(
    help="A PostgreSQL HA cluster on this machine: 3 etcd, 3 Patroni/PostgreSQL (synchronous"
    " replication), HAProxy, 2 institution API processes. All state in one directory.",
)

StateOpt = Annotated[
    Path, typer.Option("--state", help="the cluster's state directory (created by `up`)")
]
DEFAULT_STATE = Path("safescan-cluster")


def _summary(cluster: Any) -> dict[str, Any]:
    return {
        "state_dir": str(cluster.state),
        "api_url": cluster.api_url,
        "public_url": cluster.public_url,
        "db_url": cluster.db_url,
        "pgpassfile": str(cluster.pgpass),
        "admin_token_file": str(cluster.secrets_dir / "admin-token"),
        "primary": cluster.leader(),
        "ports": {
            "api": cluster.spec.ports.api,
            "postgres": cluster.spec.ports.postgres,
            "haproxy_stats": cluster.spec.ports.stats,
        },
    }


@cluster_app.command()
def up(
    state: StateOpt = DEFAULT_STATE,
    base_port: Annotated[
        int,
        typer.Option(help="first of the cluster's ports (layout in docs/operations.md)"),
    ] = 7400,
    api_processes: Annotated[int, typer.Option(help="institution API processes")] = 2,
    api_arg: Annotated[
        list[str] | None,
        typer.Option(help="extra `institution serve` option for the API processes (repeatable)"),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="the base URL shoppers reach the API at (https://pay.example.com): the API"
            " processes' [server] public_url, the start of every checkout link; default:"
            " HAProxy's API address",
        ),
    ] = None,
    ttl: Annotated[int, typer.Option(help="Patroni leader key TTL, s")] = 10,
    loop_wait: Annotated[int, typer.Option(help="Patroni loop period, s")] = 1,
    retry_timeout: Annotated[int, typer.Option(help="Patroni DCS/PostgreSQL retry, s")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Start the cluster (first run: create it); start again any part that is not running."""
    from safescan.cluster.host import preflight
    from safescan.cluster.spec import ClusterSpec, Tuning, load_or_create
    from safescan.cluster.supervisor import Cluster

    try:
        requested = None
        if not (state / "cluster.json").is_file():
            requested = ClusterSpec(
                state_dir=state,
                base_port=base_port,
                api_processes=api_processes,
                api_args=tuple(api_arg or ()),
                tuning=Tuning(ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout),
                public_url=public_url,
            )
            requested.validate()
            preflight(state)  # both before anything is written
        cluster = Cluster(load_or_create(state, requested))
        cluster.up()
        summary = _summary(cluster)
    except ClusterError as exc:
        raise fail(exc, as_json=as_json) from None
    if as_json:
        emit_json(summary)
        return
    say(f"cluster up in {summary['state_dir']}")
    say(f"  API          {summary['api_url']}   (through HAProxy)")
    say(f"  public URL   {summary['public_url']}   (the base of checkout links)")
    say(f"  database     {summary['db_url']}   (PGPASSFILE={summary['pgpassfile']})")
    say(f"  primary      {summary['primary']}")
    say(f"  admin token  in {summary['admin_token_file']}")


@cluster_app.command()
def down(
    state: StateOpt = DEFAULT_STATE,
    wipe: Annotated[bool, typer.Option(help="also delete the state directory")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop every process of the cluster (data kept unless --wipe)."""
    from safescan.cluster.spec import read_spec
    from safescan.cluster.supervisor import Cluster

    try:
        cluster = Cluster(read_spec(state))
        cluster.down(wipe=wipe)
    except ClusterError as exc:
        raise fail(exc, as_json=as_json) from None
    if as_json:
        emit_json({"stopped": True, "wiped": wipe, "state_dir": str(cluster.state)})
        return
    typer.echo("cluster stopped" + (" and its state deleted" if wipe else ""))


@cluster_app.command()
def status(state: StateOpt = DEFAULT_STATE, as_json: JsonOpt = False) -> None:
    """Which parts run, who is primary, which standby is synchronous (exit 1 if any is down)."""
    from safescan.cluster.spec import read_spec
    from safescan.cluster.supervisor import Cluster

    try:
        st = Cluster(read_spec(state)).status()
    except ClusterError as exc:
        raise fail(exc, as_json=as_json) from None
    healthy = (
        all(e["healthy"] for e in st["etcd"])
        and all(p["running"] and p["postgres_running"] for p in st["patroni"])
        and st["leader"] is not None
        and st["haproxy"]["running"]
        and all(a["healthy"] for a in st["api"])
    )
    if as_json:
        emit_json(st | {"healthy": healthy})
    else:
        for e in st["etcd"]:
            say(f"{e['name']:10} {'healthy' if e['healthy'] else 'DOWN'}")
        roles = {m["name"]: m for m in st["members"]}
        for i, p in enumerate(st["patroni"]):
            m = roles.get(f"pg{i}", {})
            role = f"{m.get('role', '?')} {m.get('state', '')}".strip() if m else "not a member"
            up_ = "running" if p["running"] else "DOWN"
            say(f"pg{i:<8} patroni {up_}, postgres {role}, lag {m.get('lag', '-')}")
        typer.echo(f"{'haproxy':10} {'running' if st['haproxy']['running'] else 'DOWN'}")
        for a in st["api"]:
            say(f"{a['name']:10} {'healthy' if a['healthy'] else 'DOWN'}")
        say(f"primary: {st['leader']}; API {st['api_url']}")
    if not healthy:
        raise typer.Exit(1)


@cluster_app.command()
def kill(
    what: Annotated[
        str,
        typer.Argument(
            help="`primary` (SIGKILL the primary's PostgreSQL), or a process: etcd0..2, "
            "patroni0..2, api0..1, haproxy"
        ),
    ],
    state: StateOpt = DEFAULT_STATE,
    as_json: JsonOpt = False,
) -> None:
    """Fault injection: SIGKILL a part of the cluster.

    `up` restarts killed processes; Patroni restarts a killed PostgreSQL as a standby."""
    from safescan.cluster.spec import read_spec
    from safescan.cluster.supervisor import Cluster

    try:
        cluster = Cluster(read_spec(state))
        if what == "primary":
            killed = f"postgres of pg{cluster.kill_primary()} (the primary)"
        else:
            cluster.kill(what)
            killed = what
    except ClusterError as exc:
        raise fail(exc, as_json=as_json) from None
    if as_json:
        emit_json({"killed": killed})
    else:
        say(f"killed {killed}")
