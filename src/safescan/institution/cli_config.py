"""`safescan institution config ...`: the effective settings (docs/operations.md,
"Configuration")."""

from __future__ import annotations

from safescan.code.cli_app import new_app
from safescan.code.output import emit_json, say
from safescan.institution.cli_options import ConfigOpt, DbOpt, JsonOpt
from safescan.institution.cli_options import settings_for as _settings

config_app = new_app(help="The institution's settings (TOML file + environment + options).")


@config_app.command("show")
def config_show(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings (options > environment > file > defaults) as TOML, every
    secret masked (passwords, the database URL's password); exit 2 on a bad setting."""
    from safescan.institution.settings import to_toml

    doc = _settings(config, as_json, db=db).public_dict()
    if as_json:
        emit_json(doc)
        return
    say(to_toml(doc), nl=False)
