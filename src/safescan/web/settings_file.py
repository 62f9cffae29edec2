"""Settings of the terminal-side commands (``safescan pos``, ``safescan wallet``): one TOML file
plus environment variables, the way the institution's settings work (docs/operations.md).

Each value comes from the first of: the command-line option; the environment variable
``<PREFIX><SECTION>__<FIELD>`` (``__`` between section and field, lists as JSON arrays); the
TOML file given with ``--config FILE.toml``; the default of the model. The models are pydantic
models whose sections forbid unknown keys: a typo in the file or in a variable is an error
naming the setting (never its value), as is a wrong type or an unreadable file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from safescan.code import strictjson
from safescan.code.errors import SafescanError
from safescan.code.smallfile import read_bounded

NESTED = "__"
MASK = "**********"
M = TypeVar("M", bound=BaseModel)


class SettingsError(SafescanError):
    """A settings file or variable is unreadable, unknown or of the wrong type."""

    code = "settings_error"


class Section(BaseModel):
    """A section of the file (``[name]``): unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def is_settings_file(path: Path) -> bool:
    """Whether ``path`` names a TOML settings file (``.toml``), not a terminal's JSON state."""
    return Path(path).suffix.lower() == ".toml"


def read_toml(path: Path) -> dict[str, Any]:
    """The file's tables (a :class:`SettingsError` if it cannot be read or parsed)."""
    try:
        return tomllib.loads(read_bounded(Path(path)).decode("utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read the settings file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path} is not a TOML file: {exc}") from None
    except RecursionError:  # arrays or inline tables nested past the interpreter's limit
        raise SettingsError(f"{path} is not a TOML file: nested too deeply") from None


def from_environment(prefix: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``PREFIX<SECTION>__<FIELD>`` variables as ``{section: {field: value}}`` (a value that is
    a JSON array is a list). Variables without ``__`` are not settings (``..._CONFIG`` ...)."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in (os.environ if environ is None else environ).items():
        if not name.startswith(prefix) or NESTED not in name[len(prefix) :]:
            continue
        section, _, key = name[len(prefix) :].lower().partition(NESTED)
        value: Any = raw
        if raw.startswith("["):
            try:
                # the strict rule (a key named twice, a lone surrogate, NaN refused); an
                # undecodable byte (kept by os.environ as a surrogate escape) is not UTF-8
                value = strictjson.loads(raw.encode("utf-8", "surrogateescape"))
            except ValueError:
                raise SettingsError(f"{name} is not a JSON array") from None
        out.setdefault(section, {})[key] = value
    return out


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win, section by section and key by key (``None`` values are skipped)."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            if not isinstance(values, Mapping):
                out[section] = values  # reported by the model
                continue
            merged = out.setdefault(section, {})
            merged.update({k: v for k, v in values.items() if v is not None})
    return out


def load(
    model: type[M],
    prefix: str,
    file: Path | None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> M:
    """The settings: ``options`` over the environment over ``file`` over the defaults."""
    data = read_toml(file) if file is not None else {}
    layers = _merge(data, from_environment(prefix), options or {})
    try:
        return model.model_validate(layers)
    except ValidationError as exc:
        where = ", ".join(
            ".".join(str(p) for p in err["loc"]) + f" ({err['msg']})" for err in exc.errors()[:3]
        )
        source = f" (file {file}, variables {prefix}*)" if file else f" (variables {prefix}*)"
        raise SettingsError(f"bad settings: {where}{source}") from None


def shown(settings: BaseModel) -> dict[str, Any]:
    """The settings as JSON-ready values, secrets masked."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return MASK if value.get_secret_value() else ""
        if isinstance(value, BaseModel):
            return {k: plain(getattr(value, k)) for k in type(value).model_fields}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    out = plain(settings)
    assert isinstance(out, dict)
    return out
