"""``python -m safescan.institution``: the institution's commands without the top-level CLI."""

from safescan.code.output import run_app
from safescan.institution.cli import institution_app

if __name__ == "__main__":
    run_app(institution_app, prog_name="safescan institution")
