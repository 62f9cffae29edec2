"""What a cluster is made of: its state directory, its ports and its failover tuning.

The spec is written to ``STATE/cluster.json`` at the first ``up``; later commands (``down``,
``status``, a second ``up``) read it back, so the ports and timings never drift between runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from safescan.cluster.errors import ClusterError
from safescan.code import strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.smallfile import read_bounded
from safescan.procs import ephemeral_range

SPEC_FILE = "cluster.json"
#: the most ``cluster.json`` is read for (it is under 1 KiB)
SPEC_FILE_LIMIT = 64 * 1024
#: every part of a loopback cluster binds this address
HOST = "127.0.0.1"
MAX_NODES = 9
#: ports base .. base+BLOCK_SPAN-1 hold every port of a cluster (:class:`Ports`)
BLOCK_SPAN = 60


@dataclass(frozen=True)
class Tuning:
    """Failover timings (seconds) and replication settings.

    The defaults are for loopback on one machine, where the network never partitions and a
    node's death is seen at once: a PostgreSQL crash is noticed by its Patroni within
    ``loop_wait``; with ``primary_start_timeout = 0`` Patroni then hands the leader key to the
    synchronous standby at once instead of restarting the crashed primary (safe only because
    replication is synchronous). ``ttl`` bounds a failover when a whole node (Patroni too)
    dies. Patroni requires ``loop_wait + 2 * retry_timeout <= ttl``.
    """

    ttl: int = 10
    loop_wait: int = 1
    retry_timeout: int = 3
    primary_start_timeout: int = 0
    synchronous_node_count: int = 1
    synchronous_mode_strict: bool = True
    check_interval_ms: int = 500  # HAProxy health-check period
    etcd_heartbeat_ms: int = 100
    etcd_election_ms: int = 1000

    def validate(self) -> None:
        """Refuse timings Patroni would misbehave with."""
        if self.loop_wait < 1 or self.retry_timeout < 1 or self.ttl < 2:
            raise ClusterError("ttl, loop_wait and retry_timeout must be positive")
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ClusterError("Patroni needs loop_wait + 2 * retry_timeout <= ttl")
        if self.synchronous_node_count < 1:
            raise ClusterError("at least one synchronous standby is required")


@dataclass(frozen=True)
class Ports:
    """Every TCP port of the cluster, derived from one base port (all bound on 127.0.0.1).

    ``base``: HAProxy's API frontend; ``base+1``: HAProxy's PostgreSQL frontend (the primary);
    ``base+2``: HAProxy's statistics page; ``base+10+i``/``base+20+i``: etcd member i's client
    and peer ports; ``base+30+i``: PostgreSQL node i; ``base+40+i``: its Patroni REST API;
    ``base+50+i``: API process i.
    """

    base: int

    @property
    def api(self) -> int:
        """HAProxy's frontend in front of the API processes."""
        return self.base

    @property
    def postgres(self) -> int:
        """HAProxy's frontend that always leads to the current primary."""
        return self.base + 1

    @property
    def stats(self) -> int:
        """HAProxy's statistics page."""
        return self.base + 2

    def etcd_client(self, i: int) -> int:
        """etcd member ``i``'s client port."""
        return self.base + 10 + i

    def etcd_peer(self, i: int) -> int:
        """etcd member ``i``'s peer port."""
        return self.base + 20 + i

    def pg(self, i: int) -> int:
        """PostgreSQL node ``i``."""
        return self.base + 30 + i

    def patroni(self, i: int) -> int:
        """Patroni REST API of node ``i``."""
        return self.base + 40 + i

    def api_process(self, i: int) -> int:
        """API process ``i``."""
        return self.base + 50 + i

    def all(self, nodes: int, apis: int) -> list[int]:
        """Every port the cluster listens on."""
        out = [self.api, self.postgres, self.stats]
        for i in range(nodes):
            out += [self.etcd_client(i), self.etcd_peer(i), self.pg(i), self.patroni(i)]
        return out + [self.api_process(i) for i in range(apis)]


@dataclass(frozen=True)
class ClusterSpec:
    """One cluster: where its state lives, how big it is, its ports and timings."""

    state_dir: Path
    base_port: int = 7400
    nodes: int = 3
    api_processes: int = 2
    api_args: tuple[str, ...] = ()
    tuning: Tuning = field(default_factory=Tuning)
    #: the base of the links the API processes hand out (``[server] public_url``); ``None``:
    #: HAProxy's API frontend (:attr:`hosted_base`)
    public_url: str | None = None

    def __post_init__(self) -> None:
        if self.public_url is not None:
            from safescan.web.publicurl import public_base_url

            try:
                normalised = public_base_url(self.public_url)
            except ValueError as exc:
                raise ClusterError(f"--public-url: {exc}") from None
            object.__setattr__(self, "public_url", normalised)

    @property
    def ports(self) -> Ports:
        """The port layout."""
        return Ports(self.base_port)

    @property
    def hosted_base(self) -> str:
        """Where shoppers reach the institution: :attr:`public_url`, else HAProxy's API
        frontend (``https://127.0.0.1:<base>``). Every API process is given it as its
        ``[server] public_url``, so a checkout link leads through HAProxy, never to the one
        process that happened to answer (whose own port a client outside cannot use)."""
        return self.public_url or f"https://{HOST}:{self.ports.api}"

    def validate(self) -> None:
        """Refuse a cluster that could not work (too few members, ports out of range)."""
        if not 3 <= self.nodes <= MAX_NODES:
            raise ClusterError(f"a cluster has 3 to {MAX_NODES} nodes (etcd quorum, a standby)")
        if not 1 <= self.api_processes <= MAX_NODES:
            raise ClusterError(f"1 to {MAX_NODES} API processes")
        if not 1024 <= self.base_port <= 65535 - BLOCK_SPAN:
            raise ClusterError("the base port must be between 1024 and 65475")
        lo, hi = ephemeral_range()
        last = self.base_port + BLOCK_SPAN - 1
        if self.base_port <= hi and last >= lo:
            raise ClusterError(
                f"the ports {self.base_port}-{last} overlap the kernel's ephemeral range "
                f"{lo}-{hi} (net.ipv4.ip_local_port_range): any outgoing connection could "
                "take one before the cluster binds it; choose a --base-port outside it"
            )
        self.tuning.validate()

    def to_json(self) -> str:
        """The form written to ``cluster.json``."""
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["api_args"] = list(self.api_args)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, state_dir: Path) -> ClusterSpec:
        """Inverse of :meth:`to_json` (the state directory is where the file was found)."""
        try:
            doc = strictjson.loads(text.encode("utf-8", "surrogateescape"))  # a key named twice
            if not isinstance(doc, dict) or not isinstance(doc.get("tuning"), dict):
                raise ValueError("not an object with a tuning")
            data: dict[str, Any] = doc
            tuning = Tuning(**data.pop("tuning"))
            data.pop("state_dir", None)
            data["api_args"] = tuple(data.get("api_args", ()))
            return cls(state_dir=state_dir, tuning=tuning, **data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ClusterError(f"{state_dir / SPEC_FILE} is not a cluster spec: {exc}") from None


def load_or_create(state_dir: Path, requested: ClusterSpec | None) -> ClusterSpec:
    """The spec stored in ``state_dir``; on the first run, ``requested`` (stored then).

    A later run with other settings than the stored ones is refused (ports and timings of a
    running cluster must not change under it)."""
    state_dir = state_dir.resolve()
    path = state_dir / SPEC_FILE
    if path.is_file():
        try:
            # its own file: bounded, never through a link, a regular file only (review)
            text = read_bounded(path, SPEC_FILE_LIMIT, "a cluster spec", own=True).decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise ClusterError(f"{path} cannot be read: {exc}") from None
        stored = ClusterSpec.from_json(text, state_dir)
        if requested is not None and replace(requested, state_dir=state_dir) != stored:
            raise ClusterError(
                f"{path} holds other settings; run `down --wipe` to start a new cluster"
            )
        return stored
    if requested is None:
        raise ClusterError(f"no cluster in {state_dir} (no {SPEC_FILE}); run `up` first")
    spec = replace(requested, state_dir=state_dir)
    spec.validate()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o755)  # noqa: S103 - the service user (postgres) enters it
    write_atomic(path, spec.to_json().encode("utf-8"))  # whole or not at all, 0600
    return spec


def read_spec(state_dir: Path) -> ClusterSpec:
    """The spec of an existing cluster."""
    return load_or_create(state_dir, None)


def free_base_port(nodes: int = 3, apis: int = 2) -> int:
    """A base port whose whole block of cluster ports is free on 127.0.0.1, reserved for this
    process (:func:`safescan.procs.reserve_port`: no other process's ``free_port`` hands one
    of them out) and outside the kernel's ephemeral range (no outgoing connection of any
    process can take one of them while the cluster's children start: the 44350 that API
    process 0 once found taken was in it); for tests and benchmarks."""
    from safescan.procs import port_bindable, port_candidate, release_port, reserve_port

    for _ in range(200):
        base = port_candidate(span=BLOCK_SPAN, align=10)
        block = Ports(base).all(nodes, apis)
        reserved = []
        for p in block:
            if not reserve_port(p):
                break
            reserved.append(p)
        if len(reserved) == len(block) and all(port_bindable(p) for p in block):
            return base
        for p in reserved:
            release_port(p)
    raise ClusterError("no free block of ports found on 127.0.0.1")
