"""``python -m safescan.merchant``: the POS commands without the top-level CLI."""

from safescan.code.output import run_app
from safescan.merchant.cli import merchant_app

if __name__ == "__main__":
    run_app(merchant_app, prog_name="safescan pos")
