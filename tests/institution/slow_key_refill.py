"""``python -m tests.institution.slow_key_refill ARGS``: ``python -m safescan.institution ARGS``
with the budget of wrong API keys per address refilled once an hour instead of once a second
(:data:`safescan.institution.http.auth.FAILED_KEY_RATE`; the burst is unchanged).

tests/institution/test_api_key_guessing.py spends the burst and then checks that the address
is cut off; at one token a second, a test slowed down by a loaded machine got a refilled token
back between two guesses (401 where 429 was expected). The burst and the cut-off are what it
checks, not the refill, so the refill is taken out of its way.
"""

from __future__ import annotations

import runpy
import sys

from safescan.institution.http import auth


def main() -> None:
    """Slow the refill down, then run the institution's commands."""
    auth.FAILED_KEY_RATE = (1 / 3600, auth.FAILED_KEY_RATE[1])
    sys.argv[0] = "safescan.institution"
    runpy.run_module("safescan.institution", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
