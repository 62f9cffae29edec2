"""``python -m safescan.wallet``: the wallet commands without the top-level CLI."""

from safescan.code.output import run_app
from safescan.wallet.cli import wallet_app

if __name__ == "__main__":
    run_app(wallet_app, prog_name="safescan wallet")
