"""``python -m safescan.wallet``: the wallet commands without the top-level CLI."""

from safescan.wallet.cli import wallet_app

if __name__ == "__main__":
    wallet_app(prog_name="safescan wallet")
