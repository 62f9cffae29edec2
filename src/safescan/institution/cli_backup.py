"""`safescan institution backup` and `safescan institution restore` (:mod:`.backup`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, say
from safescan.institution.cli_options import (
    CheckpointsOpt,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    KeysOpt,
    PassOpt,
    open_keys,
    restart_checkpoints_option,
)
from safescan.institution.cli_options import fail_cli as _fail
from safescan.institution.cli_options import settings_for as _settings


def backup(
    out: Annotated[
        Path, typer.Option("--out", help="backup file to write (FILE.manifest.json beside it)")
    ],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up the database while it serves: SQLite's online backup API, or pg_dump -Fc; writes
    the backup and its manifest (SHA-256, the database's identity, audit heads, schema)."""
    from safescan.institution.backup import backup as run_backup
    from safescan.institution.backup import manifest_path

    site = _settings(config, as_json, db=db)
    try:
        manifest = run_backup(site.db_url(), out)
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json({"backup": str(out), "manifest": str(manifest_path(out)), **manifest})
        return
    say(f"backup written: {out} ({manifest['bytes']} bytes, sha256 {manifest['sha256']})")
    say(f"manifest: {manifest_path(out)}")


def restore(
    source: Annotated[Path, typer.Option("--from", help="backup file (made by `backup`)")],
    reason: Annotated[str, typer.Option(help="why: recorded as an acknowledged restore")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    checkpoints: CheckpointsOpt = None,
    restart_checkpoints: Annotated[bool, restart_checkpoints_option()] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into an empty place (a new SQLite file, an empty PostgreSQL database)
    and record it as an acknowledged restore (signed, in the checkpoint file and the audit log),
    so the audit tells it from a silent rollback. Stop the old server first."""
    from safescan.institution.backup import restore as run_restore

    site = _settings(
        config, as_json, db=db, keys=keys, passphrase_file=passphrase_file, checkpoints=checkpoints
    )
    try:
        url = site.db_url()
        institution_keys = open_keys(site)
        path = site.checkpoint_path()
        out = run_restore(
            source, url, institution_keys, path, reason=reason, restart=restart_checkpoints
        )
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(out)
        return
    say(f"restored the backup taken at {out['taken_at']} and recorded the restore")
    for finding in out["findings"]:
        say(f"  - lost since the backup: {finding}")
    if out["reapplied_revocations"]:
        say(f"revoked again: certificates {out['reapplied_revocations']}")
    typer.echo("run `safescan institution audit` and start the server on the restored database")
