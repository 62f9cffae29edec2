"""``safescan pos rekey``: the terminal's private keys under a new passphrase, together.

The POS passphrase protects two files: the API key in the terminal's configuration
(``pos.json``, PKCS#12) and the code-signing key the terminal seals codes with
(``pos-seal/code-signing.key``, sealed PKCS#8). Both are opened under the current passphrase
first (a wrong one, or a damaged file, changes nothing), then rewritten all or nothing
(:func:`safescan.code.rekeying.rewrite`: a failure or a kill leaves both as they were).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from safescan.code.cli_options import JsonOpt
from safescan.code.display import term
from safescan.code.errors import SafescanError
from safescan.code.keys import KEY_FILE_LIMIT
from safescan.code.output import emit_json, fail
from safescan.code.smallfile import LIMIT, read_bounded
from safescan.merchant.cli_config import ConfigOpt

NewPassOpt = Annotated[
    Path,
    typer.Option(
        "--new-passphrase-file",
        help="file holding the new passphrase (at least 12 bytes); point"
        " SAFESCAN_POS_PASSPHRASE(_FILE) at it afterwards",
    ),
]


def rekey_terminal(config_file: Path, old: bytes, new: bytes) -> dict[str, Any]:
    """Re-seal the terminal's API key and code-signing key under ``new`` (module docstring)."""
    from safescan.code.rekeying import Rewrite, recover_if_interrupted, rewrite
    from safescan.code.resealing import reseal_file
    from safescan.merchant.config import PosConfig, PosConfigError
    from safescan.merchant.sealing import sealing_dir

    recover_if_interrupted(config_file.parent)
    cfg = PosConfig.load(config_file, passphrase=old)
    try:
        before = read_bounded(config_file)
    except OSError as exc:
        raise PosConfigError(f"cannot read {config_file}: {exc.strerror}") from None
    after = (json.dumps(cfg.to_json(new), indent=2)).encode()
    rewrites = [Rewrite(config_file, before, after)]
    signing = sealing_dir(cfg) / "code-signing.key"
    if signing.exists():
        try:
            data = read_bounded(signing, KEY_FILE_LIMIT, "a key file")
        except OSError as exc:
            raise PosConfigError(f"cannot read {signing}: {exc.strerror}") from None
        out = reseal_file(signing, data, old, new)
        if out is not None:
            rewrites.append(Rewrite(signing, data, out))
    rewrite(config_file.parent, rewrites)
    PosConfig.load(config_file, passphrase=new)  # reads back under the new passphrase
    return {
        "config": str(config_file),
        "files": [str(r.path) for r in rewrites],
        "resealed": len(rewrites),
    }


def rekey(
    new_passphrase_file: NewPassOpt,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-seal the terminal's API key and code-signing key under a new passphrase (the
    current one from $SAFESCAN_POS_PASSPHRASE(_FILE) or a prompt): both or neither."""
    from safescan.merchant.config import PosConfigError, pos_passphrase
    from safescan.merchant.settings import pos_settings

    try:
        try:
            new = read_bounded(new_passphrase_file, LIMIT, "a passphrase file").rstrip(b"\r\n")
        except OSError as exc:
            raise PosConfigError(f"cannot read the new passphrase file: {exc.strerror}") from None
        out = rekey_terminal(pos_settings(config).terminal_file, pos_passphrase(), new)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json) from None
    if as_json:
        emit_json(out)
        return
    for f in out["files"]:
        typer.echo(f"{term(f)}: re-sealed under the new passphrase")
    typer.echo("give the new passphrase to the POS (SAFESCAN_POS_PASSPHRASE_FILE)")


__all__ = ["rekey", "rekey_terminal"]
