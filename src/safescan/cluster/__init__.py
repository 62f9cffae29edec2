"""A PostgreSQL high-availability cluster for the institution on one machine: etcd, Patroni
(synchronous replication), HAProxy and stateless API processes (``safescan cluster ...``)."""

from safescan.cluster.errors import ClusterError
from safescan.cluster.spec import ClusterSpec, Tuning, read_spec
from safescan.cluster.supervisor import Cluster

__all__ = ["Cluster", "ClusterError", "ClusterSpec", "Tuning", "read_spec"]
