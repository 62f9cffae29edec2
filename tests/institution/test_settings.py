"""The institution's settings: TOML file + environment + options, their precedence, the masked
`config show`, and bad settings refused (exit 2, nothing changed). Real subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from safescan.api.errors import ConfigError
from safescan.institution.settings import MASK, Settings, load_settings, mask_url
from safescan.web.pki import client_context
from tests.institution.harness import PASSPHRASE
from tests.institution.pg import free_port

SECRET_PW = "s3cr3t-Pa55word-xyz"
SECRET_TLS = "tls-key-Pa55-abc"


def run(
    *args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_INSTITUTION_")}
    env.update({"SAFESCAN_INSTITUTION_PASSPHRASE": PASSPHRASE, **(env_extra or {})})
    return subprocess.run(
        [sys.executable, "-m", "safescan", "institution", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def show(config: Path | None, *extra: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    args = ["config", "show", "--json", *extra]
    if config is not None:
        args += ["--config", str(config)]
    out = run(*args, env_extra=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SAFESCAN_INSTITUTION_"):
            monkeypatch.delenv(name)


# --- precedence: option > environment > file > default ------------------------------------


def test_defaults_without_any_source() -> None:
    s = load_settings()
    assert s.server.port == 8080 and s.server.host == "127.0.0.1"
    assert s.database.url is None and s.webhooks.enabled is True
    with pytest.raises(ConfigError, match="no database"):
        s.db_url()


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    cfg = tmp_path / "inst.toml"
    cfg.write_text(
        '[server]\nport = 9001\nhost = "127.0.0.2"\nworkers = 3\n'
        '[database]\nurl = "sqlite:///from-file.db"\n'
        "[rate_limits]\nmerchant_rate = 7.0\n"
    )
    only_file = show(cfg)
    assert only_file["server"]["port"] == 9001
    assert only_file["server"]["workers"] == 3
    assert only_file["database"]["url"] == "sqlite:///from-file.db"
    assert only_file["rate_limits"]["merchant_rate"] == 7.0
    assert only_file["rate_limits"]["merchant_burst"] == 200.0  # default kept
    env = {
        "SAFESCAN_INSTITUTION_SERVER__PORT": "9002",
        "SAFESCAN_INSTITUTION_DATABASE__URL": "sqlite:///from-env.db",
    }
    with_env = show(cfg, env=env)
    assert with_env["server"]["port"] == 9002  # env beats file
    assert with_env["server"]["workers"] == 3  # the file's other keys stay
    assert with_env["database"]["url"] == "sqlite:///from-env.db"
    with_option = show(cfg, "--db", "sqlite:///from-option.db", env=env)
    assert with_option["database"]["url"] == "sqlite:///from-option.db"  # option beats env
    assert with_option["server"]["port"] == 9002


def test_precedence_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "inst.toml"
    cfg.write_text('[webhooks]\nallow = ["10.0.0.0/8"]\ndeadline = 3.0\n[server]\nport = 1\n')
    monkeypatch.setenv("SAFESCAN_INSTITUTION_WEBHOOKS__ALLOW", '["192.168.0.0/16"]')
    s = load_settings(cfg, {"server": {"port": 2, "host": None}})
    assert s.webhooks.allow == ("192.168.0.0/16",)  # env over file
    assert s.webhooks.deadline == 3.0  # file over default
    assert s.server.port == 2  # option over file
    assert s.server.host == "127.0.0.1"  # an option left unset (None) changes nothing
    tuning = s.tuning()
    assert tuning.webhook_allow == ("192.168.0.0/16",) and tuning.webhook_deadline == 3.0


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "inst.toml"
    cfg.write_text("[server]\nport = 9443\n")
    doc = show(None, env={"SAFESCAN_INSTITUTION_CONFIG": str(cfg)})
    assert doc["server"]["port"] == 9443


# --- secrets never shown ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "env", "option"])
def test_config_show_masks_secrets(tmp_path: Path, where: str) -> None:
    url = f"postgresql://safescan:{SECRET_PW}@db.internal:5432/safescan"
    cfg = tmp_path / "inst.toml"
    env: dict[str, str] = {}
    extra: list[str] = []
    if where == "file":
        cfg.write_text(f'[database]\nurl = "{url}"\n[tls]\nkey_password = "{SECRET_TLS}"\n')
    else:
        cfg.write_text("")
        env["SAFESCAN_INSTITUTION_TLS__KEY_PASSWORD"] = SECRET_TLS
        if where == "env":
            env["SAFESCAN_INSTITUTION_DATABASE__URL"] = url
        else:
            extra = ["--db", url]
    for as_json in (True, False):
        args = ["config", "show", "--config", str(cfg), *extra] + (["--json"] if as_json else [])
        out = run(*args, env_extra=env)
        assert out.returncode == 0, out.stderr
        text = out.stdout + out.stderr
        assert SECRET_PW not in text and SECRET_TLS not in text
        assert MASK in text
        assert "db.internal:5432/safescan" in text  # the rest of the URL is shown
        if as_json:
            doc = json.loads(out.stdout)
            assert doc["tls"]["key_password"] == MASK
            assert (
                doc["database"]["url"] == f"postgresql://safescan:{MASK}@db.internal:5432/safescan"
            )


def test_a_bad_setting_does_not_echo_its_value(tmp_path: Path) -> None:
    cfg = tmp_path / "inst.toml"
    cfg.write_text(f'[server]\nport = "{SECRET_PW}"\n')
    out = run("config", "show", "--config", str(cfg))
    assert out.returncode == 2
    assert "server.port" in out.stderr and SECRET_PW not in out.stdout + out.stderr
    env = {"SAFESCAN_INSTITUTION_SERVER__WORKERS": SECRET_PW}
    out = run("config", "show", "--json", env_extra=env)
    assert out.returncode == 2 and SECRET_PW not in out.stdout + out.stderr
    assert json.loads(out.stdout)["error"]["code"] == "config_error"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@h/db",
        "postgresql+psycopg://u:p%40ss@h:5/db?sslmode=require",
        "postgresql://:pw@h/db",
    ],
)
def test_mask_url_hides_every_password(url: str) -> None:
    masked = mask_url(url)
    assert MASK in masked
    assert "pw" not in masked.replace(MASK, "") and "p%40ss" not in masked
    assert masked.endswith(url.rsplit("@", 1)[1])


def test_mask_url_leaves_urls_without_password() -> None:
    assert mask_url("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"


# --- bad settings: typed error, exit 2 ------------------------------------------------------


BAD_FILES = {
    "unknown key": ("[server]\nprot = 8080\n", "server.prot: unknown setting"),
    "unknown section": ("[serverr]\nport = 8080\n", "serverr: unknown setting"),
    "wrong type": ('[server]\nport = "eighty"\n', "server.port"),
    "out of range": ("[server]\nport = 70000\n", "server.port"),
    "wrong list type": ('[webhooks]\nallow = "10.0.0.0/8"\n', "webhooks.allow"),
    "section not a table": ("server = 5\n", "server"),
    "bare db file": ('[database]\nurl = "inst.db"\n', "database.url"),
    "not toml": ("[server\nport = 1\n", "not valid TOML"),
    "not utf-8": (b'[server]\nhost = "\xff\xfe"\n', "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_a_typed_error(tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    cfg = tmp_path / "inst.toml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = run("config", "show", "--json", "--config", str(cfg))
    assert out.returncode == 2, out.stdout
    err = json.loads(out.stdout)["error"]
    assert err["code"] == "config_error"
    assert expected in err["message"]
    with pytest.raises(ConfigError):
        load_settings(cfg)


BAD_ENV = {
    "SAFESCAN_INSTITUTION_SERVER__PROT": "8080",  # a typo: refused, not ignored
    "SAFESCAN_INSTITUTION_NOSECTION__PORT": "8080",
    "SAFESCAN_INSTITUTION_SERVER__PORT": "http",
    "SAFESCAN_INSTITUTION_WEBHOOKS__ENABLED": "perhaps",
    "SAFESCAN_INSTITUTION_SERVER__TRUSTED_PROXIES": "not json",
}


@pytest.mark.parametrize("name", sorted(BAD_ENV))
def test_bad_environment_is_a_typed_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run("config", "show", "--json", env_extra={name: BAD_ENV[name]})
    assert out.returncode == 2, out.stdout
    assert json.loads(out.stdout)["error"]["code"] == "config_error"
    monkeypatch.setenv(name, BAD_ENV[name])
    with pytest.raises(ConfigError):
        load_settings()


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_missing_config_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.toml"
    if kind == "directory":
        path.mkdir()
    out = run("config", "show", "--config", str(path))
    assert out.returncode == 2
    assert str(path) in out.stderr.replace("\n", "")


@pytest.mark.parametrize(
    "bad",
    ["[server]\nprot = 1\n", '[database]\nurl = "sqlite:///OTHER"\n[tls]\nplain_http = 3\n', None],
)
def test_init_with_a_bad_config_changes_nothing(tmp_path: Path, bad: str | None) -> None:
    cfg = tmp_path / "inst.toml"
    if bad is not None:
        cfg.write_text(bad)
    db = tmp_path / "institution.db"
    out = run("init", "--db", f"sqlite:///{db}", "--config", str(cfg), "--json", cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    assert json.loads(out.stdout)["error"]["code"] == "config_error"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["inst.toml"] if bad else [])


def test_commands_say_when_no_database_is_configured(tmp_path: Path) -> None:
    for args in (["migrate"], ["admin-token", "list"], ["manufacturer", "list"], ["audit"]):
        out = run(*args, "--json", cwd=tmp_path)
        assert out.returncode == 2, (args, out.stdout)
        assert "no database" in json.loads(out.stdout)["error"]["message"]
    assert list(tmp_path.iterdir()) == []


# --- the settings actually drive the commands ----------------------------------------------


def test_one_file_configures_init_commands_and_serve(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "inst.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "inst.db"}"\n'
        f'[keystore]\ndir = "{tmp_path / "keys"}"\n'
        f"[server]\nport = {port}\naccess_log = false\n"
    )
    init = run("init", "--config", str(cfg))
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "keys").is_dir() and (tmp_path / "inst.db").is_file()
    listed = run("admin-token", "list", "--json", "--config", str(cfg))
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1
    roots = run("root-keys", "--json", env_extra={"SAFESCAN_INSTITUTION_CONFIG": str(cfg)})
    assert roots.returncode == 0 and json.loads(roots.stdout)["root_keys"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_INSTITUTION_")}
    env["SAFESCAN_INSTITUTION_PASSPHRASE"] = PASSPHRASE
    proc = subprocess.Popen(
        [sys.executable, "-m", "safescan", "institution", "serve", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # the JSON log's "listening" event and the plain line for the person (either order)
        lines = [proc.stdout.readline() for _ in range(2)]
        assert any(f"listening on https://127.0.0.1:{port}" in x for x in lines), lines  # HTTPS
        assert any('"event": "listening"' in x for x in lines), lines
        ca = client_context(tmp_path / "keys.tls" / "ca.pem")  # the CA `init` made
        r = httpx.get(f"https://127.0.0.1:{port}/health", timeout=10, verify=ca)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_settings_model_is_frozen_and_forbids_unknown_fields() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.server.port = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="server"):
        Settings.model_validate({"server": {"nope": 1}})


def test_merchant_rate_zero_means_no_limit_and_negative_is_refused() -> None:
    """The load benchmark and the fault tests serve with ``--merchant-rate 0`` (no limit)."""
    assert load_settings(None, {"rate_limits": {"merchant_rate": 0}}).tuning().merchant_rate == 0
    with pytest.raises(ConfigError, match=r"rate_limits\.merchant_rate"):
        load_settings(None, {"rate_limits": {"merchant_rate": -1}})


def test_observability_settings_reach_the_tuning() -> None:
    s = load_settings(
        None,
        {
            "server": {"log_level": "debug", "log_format": "console", "access_log": False},
            "metrics": {"access": "token", "token_file": Path("/etc/safescan/metrics-token")},
        },
    )
    t = s.tuning()
    assert (t.log_level, t.log_format, t.access_log) == ("debug", "console", False)
    assert (t.metrics_access, t.metrics_token_file) == ("token", "/etc/safescan/metrics-token")
    for section, field, bad in (
        ("server", "log_level", "chatty"),
        ("server", "log_format", "xml"),
        ("metrics", "access", "everyone"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"{section}.{field}")):
            load_settings(None, {section: {field: bad}})
