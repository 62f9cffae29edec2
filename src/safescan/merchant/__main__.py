"""``python -m safescan.merchant``: the POS commands without the top-level CLI."""

from safescan.merchant.cli import merchant_app

if __name__ == "__main__":
    merchant_app(prog_name="safescan pos")
