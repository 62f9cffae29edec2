"""The cluster tooling's typed error."""

from __future__ import annotations

from safescan.code.errors import SafescanError


class ClusterError(SafescanError):
    """The cluster could not be started, stopped or inspected (the message says why)."""

    code = "cluster_error"
