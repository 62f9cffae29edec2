"""`safescan institution audit` and `reconcile`: checking the database (integrity, ledger,
audit log, checkpoints) and accepting one restored from an older copy; registered by
:mod:`safescan.institution.cli`."""

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
from safescan.institution.cli_options import with_db as _with_db


def audit(
    db: DbOpt = None,
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    checkpoints: CheckpointsOpt = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="SQLite quick_check instead of integrity_check")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Check the database's integrity, every cross-reference, the ledger, the hash-chained audit
    log and (with a checkpoint file) that the database was not rolled back; exit 1 on any
    problem, with one line per problem."""
    from safescan.institution.auditing import run_audit
    from safescan.institution.db import normalize_url

    site = _settings(config, as_json, db=db, keys=keys, checkpoints=checkpoints)
    try:
        db = site.db_url()
        url = normalize_url(db)
        report = run_audit(
            url,
            quick=quick,
            checkpoint_file=_checkpoint_path(db, site.keystore.dir, site.keystore.checkpoints),
        )
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(report.to_dict())
    else:
        for p in report.problems:
            say(f"VIOLATION: {p}")
        for note in report.notes:
            say(f"note: {note}")
        count = len(report.problems)
        say("audit passed" if report.ok else f"audit FAILED: {count} problem(s)")
    if not report.ok:
        raise typer.Exit(1)


def _checkpoint_path(db: str, keys: Path | None, given: Path | None) -> Path | None:
    """The checkpoint file to check against: given, or beside the key directory if there."""
    if given is not None:
        return given
    from safescan.institution.checkpoints import default_path
    from safescan.institution.keystore import default_key_dir

    try:
        key_dir = keys or default_key_dir(db)
    except SafescanError:
        return None
    return default_path(key_dir)


def reconcile(
    note: Annotated[str, typer.Option(help="why: recorded in the audit log")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    checkpoints: CheckpointsOpt = None,
    restart_checkpoints: Annotated[
        bool, restart_checkpoints_option(" (the records that still verify count)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Accept a database restored from an older copy: re-apply journaled revocations, move
    serials, the revocation list sequence and event numbers past everything issued before,
    record it all in the audit log, and let the API processes serve again."""
    from safescan.institution.reconcile import reconcile as run_reconcile

    site = _settings(
        config, as_json, db=db, keys=keys, passphrase_file=passphrase_file, checkpoints=checkpoints
    )
    try:
        db = site.db_url()
        institution_keys = open_keys(site)
        path = site.checkpoint_path()
        out = _with_db(
            db,
            lambda d: run_reconcile(
                d, institution_keys, path, note=note, restart=restart_checkpoints
            ),
        )
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(out)
    elif not out["reconciled"]:
        say(f"nothing to reconcile: {out['reason']}")
    else:
        typer.echo("reconciled; the audit log records it. What the checkpoints saw and the")
        typer.echo("database lacks (check the receipts wallets and merchants hold):")
        for finding in out["findings"]:
            say(f"  - {finding}")
        say(f"certificate serials continue after {out['certificate_serial']}")
        say(f"revocation list sequence is now {out['crl_sequence']}")
        say(f"event numbers continue after {out['event_seq']}")
        if out["reapplied_revocations"]:
            say(f"revoked again: certificates {out['reapplied_revocations']}")
        if "restart" in out:
            r = out["restart"]
            say(
                f"checkpoint file started again at record {r['starts_at']}"
                f" ({r['records_kept']} record(s) of the old one kept"
                + (f"; the old file is now {r['moved_to']})" if r["moved_to"] else ")")
            )
