"""``python -m safescan``."""

from safescan.cli import main

main()
