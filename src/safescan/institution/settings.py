"""The institution's settings: one TOML file, environment variables, command-line options.

Every ``safescan institution`` command reads the same :class:`Settings` (pydantic-settings).
Each value comes from the first of these that sets it:

1. the command-line option (``--db``, ``--host`` ...);
2. the environment: ``SAFESCAN_INSTITUTION_<SECTION>__<FIELD>`` (``__`` between the section and
   the field, e.g. ``SAFESCAN_INSTITUTION_SERVER__PORT=8443``; lists as JSON arrays);
3. the TOML file given with ``--config FILE`` (or ``$SAFESCAN_INSTITUTION_CONFIG``);
4. the default below.

A bad setting (an unknown section or key in the file or among the ``..._SECTION__FIELD``
variables, a wrong type, a missing or unreadable file) is a :class:`ConfigError` naming the
setting, never its value; the command then exits 2 having changed nothing.

Adding a setting: add a field to the section's model below (or a new section model and a field
of :class:`Settings` for it), with a default and a ``description``. Secrets are
:class:`pydantic.SecretStr` (``config show`` prints them masked; read them with
``.get_secret_value()`` where they are used). Section names must not collide with the internal
variables ``SAFESCAN_INSTITUTION_{DB,KEYS,PASSPHRASE,PASSPHRASE_FILE,TUNING,CHECKPOINTS,...}``.
The reference for operators is docs/operations.md ("Configuration").
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from safescan.api.errors import ConfigError
from safescan.institution.config import (
    ENV_HSM_MODULE,
    ENV_HSM_PIN_FILE,
    ENV_HSM_TOKEN,
    ENV_KEY_BACKEND,
    Tuning,
)
from safescan.web.publicurl import public_base_url

ENV_PREFIX = "SAFESCAN_INSTITUTION_"
ENV_CONFIG = "SAFESCAN_INSTITUTION_CONFIG"
NESTED = "__"
MASK = "**********"


class _Section(BaseModel):
    """A section of the file (``[name]``): unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    """``[database]``: where the ledger lives."""

    url: str | None = Field(
        default=None,
        description="sqlite:///path or postgresql://user@host/db (a password is a secret)",
    )
    pool_size: int = Field(default=16, ge=1, le=1000, description="connections per API process")

    @field_validator("url")
    @classmethod
    def _a_url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(
                "not a database URL; did you mean sqlite:///FILE or postgresql://USER@HOST/DB?"
            )
        return value


class KeystoreSettings(_Section):
    """``[keystore]``: the institution's signing keys."""

    dir: Path | None = Field(
        default=None, description="key directory (default for SQLite: <db>.keys)"
    )
    passphrase_file: Path | None = Field(
        default=None,
        description="file holding the key passphrase (else $SAFESCAN_INSTITUTION_PASSPHRASE)",
    )
    checkpoints: Path | None = Field(
        default=None, description="checkpoint file (default: <key directory>.checkpoints)"
    )
    backend: Literal["file", "pkcs11"] | None = Field(
        default=None,
        description="where the root signing key lives: file (encrypted in the key directory) or"
        " pkcs11 (generated in a token, never exported); default: what the key directory"
        " records (file for a new one)",
    )
    pkcs11_module: Path | None = Field(
        default=None, description="PKCS#11 module (default: Debian's SoftHSM2 libsofthsm2.so)"
    )
    token_label: str | None = Field(default=None, description="label of the PKCS#11 token")
    pin_file: Path | None = Field(
        default=None,
        description="file holding the token's user PIN (else $SAFESCAN_HSM_PIN); the PIN itself"
        " is never a setting",
    )

    def export_token(self) -> None:
        """Hand the PKCS#11 settings to this process and the API processes it starts (through
        the internal ``SAFESCAN_KEY_BACKEND``/``SAFESCAN_HSM_*`` variables; never the PIN)."""
        for name, value in (
            (ENV_KEY_BACKEND, self.backend),
            (ENV_HSM_MODULE, self.pkcs11_module),
            (ENV_HSM_TOKEN, self.token_label),
            (ENV_HSM_PIN_FILE, self.pin_file),
        ):
            if value is not None:
                os.environ[name] = str(value)


class ServerSettings(_Section):
    """``[server]``: the API process(es) of ``institution serve``."""

    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port")
    workers: int = Field(default=1, ge=1, le=256, description="API processes")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="log level (JSON lines on stderr)"
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="json: one object per line; console: for people"
    )
    access_log: bool = Field(default=True, description="one line per request on stderr")
    trusted_proxies: tuple[str, ...] = Field(
        default=(), description="reverse proxies whose X-Forwarded-For/-Proto are believed"
    )
    public_url: str | None = Field(
        default=None,
        description="the base URL shoppers reach this server at (https://pay.example.com): the"
        " links it hands out (checkout pages) start with it; unset: the address the connection"
        " reached, never the request's Host header",
    )
    max_connections: int = Field(
        default=1000, ge=1, description="open client connections per process"
    )
    head_timeout: float = Field(default=10.0, gt=0, description="seconds to send a request head")
    max_per_address: int = Field(
        default=0, ge=0, description="open connections from one client address (0: no bound)"
    )
    write_deadline: float = Field(
        default=15.0, gt=0, description="seconds to wait for the SQLite writer"
    )
    checkpoint_interval: float = Field(default=1.0, gt=0, description="seconds between checkpoints")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else public_base_url(value)

    maintenance_interval: float = Field(
        default=5.0, gt=0, description="expiry sweep interval, seconds"
    )


class TlsSettings(_Section):
    """``[tls]``: the server certificate ``serve`` presents and the CA clients pin."""

    cert: Path | None = Field(default=None, description="server certificate chain (PEM)")
    key: Path | None = Field(default=None, description="its private key (PEM)")
    key_password: SecretStr | None = Field(
        default=None, description="the key's password, if encrypted"
    )
    ca: Path | None = Field(default=None, description="the CA certificate clients pin (PEM)")
    names: tuple[str, ...] = Field(
        default=(), description="extra DNS names / IP addresses for the certificate `init` makes"
    )
    plain_http: bool = Field(
        default=False, description="serve plain HTTP (refused unless the address is loopback)"
    )


class WebhookSettings(_Section):
    """``[webhooks]``: the delivery policy."""

    enabled: bool = Field(default=True, description="record events for webhook delivery")
    base_delay: float = Field(default=5.0, gt=0, description="first retry delay, seconds")
    allow: tuple[str, ...] = Field(
        default=(), description="networks webhooks may reach although not public (CIDR or address)"
    )
    allow_http: bool = Field(default=False, description="accept plain http:// webhook URLs")
    deadline: float = Field(default=10.0, gt=0, description="total seconds per delivery attempt")
    endpoint_concurrency: int = Field(
        default=2, ge=1, description="attempts in flight per endpoint"
    )
    concurrency: int = Field(default=64, ge=1, description="attempts in flight per process")
    log_per_endpoint: int = Field(
        default=1000, ge=10, le=100_000, description="delivery-log attempts kept per merchant"
    )
    log_max_days: int = Field(
        default=30, ge=1, le=3650, description="delivery-log attempts older than this are deleted"
    )


class RateLimitSettings(_Section):
    """``[rate_limits]``: per merchant, per API process."""

    merchant_rate: float = Field(
        default=100.0, ge=0, description="merchant requests per second (0: no limit)"
    )
    merchant_burst: float = Field(default=200.0, gt=0, description="merchant burst size")


class MetricsSettings(_Section):
    """``[metrics]``: who may read ``GET /metrics`` (safescan.institution.metrics)."""

    access: Literal["loopback", "token", "off"] = Field(
        default="loopback",
        description="loopback: clients on 127.0.0.1/::1 not through a proxy; token: a bearer"
        " token (token_file); off: no /metrics",
    )
    token_file: Path | None = Field(
        default=None, description="file holding the metrics bearer token (16+ characters)"
    )


_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("safescan_settings_file", default={})  # noqa: B039 - never mutated


class Settings(BaseSettings):
    """The effective settings of one institution command (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    keystore: KeystoreSettings = Field(default_factory=KeystoreSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Command line (init arguments) > environment > the TOML file > defaults."""
        file_source = InitSettingsSource(settings_cls, init_kwargs=_FILE_VALUES.get())
        return (init_settings, env_settings, file_source)

    def db_url(self) -> str:
        """The database URL; a :class:`ConfigError` when no source gives one."""
        if not self.database.url:
            raise ConfigError(
                "no database: give --db, database.url in the --config file or"
                f" {ENV_PREFIX}DATABASE{NESTED}URL"
            )
        return self.database.url

    def key_dir(self) -> Path:
        """The key directory: ``keystore.dir``, else the default beside the database."""
        from safescan.institution.keystore import default_key_dir

        return self.keystore.dir or default_key_dir(self.db_url())

    def checkpoint_path(self) -> Path:
        """The checkpoint file: ``keystore.checkpoints``, else beside the key directory."""
        from safescan.institution.checkpoints import default_path

        return self.keystore.checkpoints or default_path(self.key_dir())

    def tuning(self) -> Tuning:
        """The runtime knobs handed to each API process."""
        hooks = self.webhooks
        return Tuning(
            merchant_rate=self.rate_limits.merchant_rate,
            merchant_burst=self.rate_limits.merchant_burst,
            webhook_base_delay=hooks.base_delay,
            maintenance_interval=self.server.maintenance_interval,
            webhooks=hooks.enabled,
            webhook_allow=hooks.allow,
            webhook_http=hooks.allow_http,
            webhook_deadline=hooks.deadline,
            webhook_endpoint_concurrency=hooks.endpoint_concurrency,
            webhook_concurrency=hooks.concurrency,
            webhook_log_per_endpoint=hooks.log_per_endpoint,
            webhook_log_max_days=hooks.log_max_days,
            write_deadline=self.server.write_deadline,
            public_url=self.server.public_url,
            log_level=self.server.log_level,
            log_format=self.server.log_format,
            access_log=self.server.access_log,
            metrics_access=self.metrics.access,
            metrics_token_file=str(self.metrics.token_file) if self.metrics.token_file else None,
        )

    def public_dict(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked (for ``config show``)."""
        doc = self.model_dump(mode="json")
        url = doc["database"]["url"]
        if url:
            doc["database"]["url"] = mask_url(url)
        return doc


def mask_url(url: str) -> str:
    """``url`` with the password (if any) replaced by asterisks."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK  # unparseable: show nothing of it
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def read_file(path: Path) -> dict[str, Any]:
    """The TOML file's contents; a :class:`ConfigError` if missing, unreadable or invalid."""
    from safescan.code.smallfile import read_bounded

    try:
        return tomllib.loads(read_bounded(Path(path)).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _check_env_names(environ: Mapping[str, str]) -> None:
    """Refuse a ``SAFESCAN_INSTITUTION_SECTION__FIELD`` variable naming no setting (a typo would
    otherwise be ignored silently)."""
    sections = Settings.model_fields
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or NESTED not in upper:
            continue
        section, _, field = upper[len(ENV_PREFIX) :].partition(NESTED)
        model = sections.get(section.lower())
        annotation = model.annotation if model is not None else None
        known = (
            isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
            and field.lower() in annotation.model_fields
        )
        if not known:
            raise ConfigError(f"the environment variable {name} names no setting")


def _describe(exc: ValidationError, path: Path | None) -> str:
    """One line per wrong setting, without the values (they may be secrets)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(settings)"
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}: {msg}")
    source = f" (file {path}, environment, options)" if path else ""
    return f"invalid settings{source}: " + "; ".join(lines)


def load_settings(
    config: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """The effective settings: ``overrides`` (the command line, ``{section: {field: value}}``,
    ``None`` values ignored) > environment > ``config`` (else ``$SAFESCAN_INSTITUTION_CONFIG``)
    > defaults. Raises :class:`ConfigError` on any bad setting."""
    if config is None and os.environ.get(ENV_CONFIG):
        config = Path(os.environ[ENV_CONFIG])
    file_values = read_file(config) if config is not None else {}
    given = {
        section: {k: v for k, v in fields.items() if v is not None}
        for section, fields in (overrides or {}).items()
    }
    _check_env_names(os.environ)
    token = _FILE_VALUES.set(file_values)
    try:
        kwargs: dict[str, Any] = {section: fields for section, fields in given.items() if fields}
        return Settings(**kwargs)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings in the environment: {_env_reason(exc)}") from None
    finally:
        _FILE_VALUES.reset(token)


def _env_reason(exc: SettingsError) -> str:
    """pydantic-settings' message names the field; keep that, drop any value it quotes."""
    return str(exc).split(" from source ")[0][:200]


def to_toml(doc: dict[str, Any]) -> str:
    """Plain settings data as TOML text (unset values as comments)."""
    out: list[str] = []
    for section, fields in doc.items():
        out.append(f"[{section}]")
        for name, value in fields.items():
            if value is None:
                out.append(f"# {name} = (not set)")
            else:
                out.append(f"{name} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
