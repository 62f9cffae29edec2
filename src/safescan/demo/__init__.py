"""``safescan demo``: the story (:mod:`.story`), the temporary deployment it runs on
(:mod:`.stack`) and the attacks it tries (:mod:`.attacks`). Child processes are supervised by
:mod:`safescan.procs`."""

from __future__ import annotations

from safescan.demo.attacks import (
    Attack,
    altered_code,
    brute_force_pin,
    forged_code,
    institution_refuses_resubmission,
    refused_by_wallet,
    replay_authorization,
    scheme_public_key,
)
from safescan.demo.stack import DEMO_PIN, DemoError, Stack
from safescan.demo.story import ITEMS, DemoRun, demo_command

__all__ = [
    "DEMO_PIN",
    "ITEMS",
    "Attack",
    "DemoError",
    "DemoRun",
    "Stack",
    "altered_code",
    "brute_force_pin",
    "demo_command",
    "forged_code",
    "institution_refuses_resubmission",
    "refused_by_wallet",
    "replay_authorization",
    "scheme_public_key",
]
