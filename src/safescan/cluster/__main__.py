"""``python -m safescan.cluster`` = ``safescan cluster``."""

from safescan.cluster.cli import cluster_app

cluster_app(prog_name="safescan cluster")
