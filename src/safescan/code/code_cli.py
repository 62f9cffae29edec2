"""The `safescan code` group: each command's module is imported only when it runs.

`code make` (:mod:`safescan.code.cli`) needs keys, certificates and QR imaging;
`code inspect` (:mod:`safescan.code.inspect_cli`) without keys needs none of them.
"""

from __future__ import annotations

from typing import ClassVar

from safescan.code.cli_app import new_app
from safescan.code.lazy_cli import LazyCommand, LazyGroup, attribute


class _CodeGroup(LazyGroup):
    lazy: ClassVar[dict[str, LazyCommand]] = {
        "make": LazyCommand(
            "Build, sign and seal a dynamic or static code; write text, PNG and SVG.",
            attribute("safescan.code.cli", "code_make"),
        ),
        "inspect": LazyCommand(
            "Say what an input is, without acting on it. Exit 0 when valid, 2 when not.",
            attribute("safescan.code.inspect_cli", "code_inspect"),
        ),
    }


code_app = new_app(cls=_CodeGroup, help="Make and inspect payment codes.")
