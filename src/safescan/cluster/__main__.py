"""``python -m safescan.cluster`` = ``safescan cluster``."""

from safescan.cluster.cli import cluster_app
from safescan.code.output import run_app

run_app(cluster_app, prog_name="safescan cluster")
