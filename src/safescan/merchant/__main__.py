"""``python -m safescan.merchant``: the POS commands without the top-level CLI (each command
imported when it runs, as ``safescan pos``)."""

from safescan.code.output import run_app
from safescan.merchant.pos_cli import pos_main_app

if __name__ == "__main__":
    run_app(pos_main_app, prog_name="safescan pos")
