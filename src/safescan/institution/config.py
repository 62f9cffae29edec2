"""Light configuration shared by the CLI and the API processes (no heavy imports here)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from safescan.api.errors import ConfigError
from safescan.code import strictjson

ENV_DB = "SAFESCAN_INSTITUTION_DB"
ENV_PASSPHRASE_FILE = "SAFESCAN_INSTITUTION_PASSPHRASE_FILE"  # noqa: S105 - a variable name
ENV_TUNING = "SAFESCAN_INSTITUTION_TUNING"
ENV_CHECKPOINTS = "SAFESCAN_INSTITUTION_CHECKPOINTS"
ENV_CHECKPOINT_INTERVAL = "SAFESCAN_INSTITUTION_CHECKPOINT_INTERVAL"
# the root signing key in a PKCS#11 token (safescan.institution.hsm); set from [keystore]
ENV_KEY_BACKEND = "SAFESCAN_KEY_BACKEND"
ENV_HSM_MODULE = "SAFESCAN_HSM_MODULE"
ENV_HSM_TOKEN = "SAFESCAN_HSM_TOKEN"  # noqa: S105 - a variable name
ENV_HSM_PIN_FILE = "SAFESCAN_HSM_PIN_FILE"
ENV_HSM_PIN = "SAFESCAN_HSM_PIN"


@dataclass(frozen=True)
class Tuning:
    """Runtime knobs of one API process."""

    merchant_rate: float = 100.0
    merchant_burst: float = 200.0
    webhook_base_delay: float = 5.0
    maintenance_interval: float = 5.0
    webhooks: bool = True
    webhook_allow: tuple[str, ...] = ()  # networks webhooks may reach although not public
    webhook_http: bool = False  # plain http:// webhook URLs accepted
    webhook_deadline: float = 10.0  # total seconds per delivery attempt
    webhook_endpoint_concurrency: int = 2  # attempts in flight per merchant endpoint
    webhook_concurrency: int = 64  # attempts in flight per process
    webhook_log_per_endpoint: int = 1000  # delivery-log rows kept per merchant
    webhook_log_max_days: int = 30  # delivery-log rows older than this are deleted
    write_deadline: float = 15.0  # seconds a request waits for the SQLite writer
    public_url: str | None = None  # the base of the links handed out (web.publicurl)
    log_level: str = "info"  # debug, info, warning, error (safescan.api.obslog)
    log_format: str = "json"  # json (one object per line) or console (for people)
    access_log: bool = True  # one line per request
    metrics_access: str = "loopback"  # who may read /metrics: loopback, token, off
    metrics_token_file: str | None = None  # the metrics bearer token (metrics_access token)

    def encode(self) -> str:
        """For passing to worker processes through the environment (JSON)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, text: str) -> Tuning:
        """Inverse of :meth:`encode`."""
        try:
            doc = strictjson.loads(text.encode("utf-8", "surrogateescape"))
            if not isinstance(doc, dict):
                raise TypeError
            for name in ("webhook_allow",):
                if name in doc:
                    doc[name] = tuple(str(x) for x in doc[name])
            return cls(**doc)
        except (ValueError, TypeError):
            raise ConfigError(f"bad {ENV_TUNING}") from None


def check_passphrase_given(passphrase_file: Path | None) -> None:
    """Fail early (without loading any key) when no passphrase source is configured."""
    if passphrase_file is not None and Path(passphrase_file).is_file():
        return
    if passphrase_file is None and len(os.environ.get("SAFESCAN_INSTITUTION_PASSPHRASE", "")) >= 8:
        return
    raise ConfigError(
        "a key passphrase of at least 8 bytes is required (SAFESCAN_INSTITUTION_PASSPHRASE or"
        " --passphrase-file)"
    )
