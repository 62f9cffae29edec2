"""`safescan institution rekey` (:mod:`.rekey`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, say
from safescan.institution.cli_options import ConfigOpt, JsonOpt, KeysOpt, PassOpt, passphrase_of
from safescan.institution.cli_options import fail_cli as _fail
from safescan.institution.cli_options import settings_for as _settings


def rekey(
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    as_json: JsonOpt = False,
    new_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--new-passphrase-file",
            help="re-seal every key file (root, scheme, server secret, TLS CA) under the"
            " passphrase in this file; point --passphrase-file at it afterwards",
        ),
    ] = None,
) -> None:
    """Re-seal the key files in the current format (scrypt + AES-GCM), under a new passphrase
    with --new-passphrase-file: every file is checked to open first, then all are rewritten
    or none (a failure or a kill leaves each as it was); running it again has nothing to do."""
    from safescan.institution.keystore import load_passphrase
    from safescan.institution.rekey import rekey as run_rekey

    site = _settings(config, as_json, keys=keys, passphrase_file=passphrase_file)
    try:
        passphrase = passphrase_of(site)
        new = None if new_passphrase_file is None else load_passphrase(new_passphrase_file)
        out = run_rekey(site.key_dir(), passphrase, new)
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(out)
        return
    for f in out["files"]:
        done = "re-sealed" if f["resealed"] else "left as it is"
        say(f"{f['file']}: {f['was']}: {done}")
    if out["root_key"] != "file":
        say(f"the root key is in a PKCS#11 token ({out['root_key']}): no file to re-seal")
    say(f"{out['resealed']} key file(s) re-sealed in {out['key_dir']}")
    if out["passphrase"] == "changed":  # noqa: S105 - a state, not a secret
        typer.echo("the keys are now under the new passphrase: give it to every process")
