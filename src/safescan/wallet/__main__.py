"""``python -m safescan.wallet``: the wallet commands without the top-level CLI (each command
imported when it runs, as ``safescan wallet``)."""

from safescan.code.output import run_app
from safescan.wallet.wallet_cli import wallet_group

if __name__ == "__main__":
    run_app(wallet_group, prog_name="safescan wallet")
