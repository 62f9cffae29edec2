"""``python -m safescan.institution``: the institution's commands without the top-level CLI."""

from safescan.institution.cli import institution_app

if __name__ == "__main__":
    institution_app(prog_name="safescan institution")
