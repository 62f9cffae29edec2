"""Every private key file at rest can be re-sealed under a new passphrase, all or nothing.

``safescan keys rekey`` (a ``keys init`` directory, a carrier factory's directory, one signing
key), ``safescan institution rekey --new-passphrase-file`` (root, scheme, server secret and
TLS CA keys, across two directories) and ``safescan pos rekey`` (the API key in the terminal's
configuration and its code-signing key). Attacked with: a wrong passphrase, a file under
another passphrase, truncated, flipped and damaged files (nothing changes, nothing is left
behind); a failure injected at every rename and fsync (every file as it was); and ``kill -9``
at every rename (the next load puts every file back: each opens under the old passphrase,
byte for byte as before).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from safescan.carrier.factory import Factory
from safescan.code import keyfile
from safescan.code.errors import KeyFileError
from safescan.code.keys import SigningKey
from safescan.code.keystore import KeyDirectory
from safescan.code.rekeying import JOURNAL
from safescan.code.resealing import rekey_path
from safescan.institution.keystore import KeyStore
from safescan.institution.rekey import rekey as institution_rekey
from safescan.institution.tls_setup import default_tls_dir
from safescan.web import pki

#: scrypt at its real cost (32 MiB, tens of ms) would make the hundreds of opens these tests
#: need take minutes: the key derivation is replaced by a cheap one (also in the killed
#: processes); what is tested is which bytes each file holds, not the KDF's cost
CHEAP_KDF = (
    "import hashlib\n"
    "from safescan.code import keyfile\n"
    "from safescan.institution import keystore\n"
    "keyfile._derive = lambda pw, salt, n: hashlib.sha256(b'kdf' + salt + pw).digest()\n"
    "keystore._kdf = lambda pw, salt: hashlib.sha256(b'kdf' + salt + pw).digest()\n"
)


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    from safescan.institution import keystore

    monkeypatch.setattr(
        keyfile, "_derive", lambda pw, salt, n: hashlib.sha256(b"kdf" + salt + pw).digest()
    )
    monkeypatch.setattr(
        keystore, "_kdf", lambda pw, salt: hashlib.sha256(b"kdf" + salt + pw).digest()
    )


OLD = b"old passphrase 123"
NEW = b"new passphrase 456"
ROOT = Path(__file__).resolve().parents[2]


def snapshot(*dirs: Path) -> dict[str, bytes]:
    """Every file's bytes (the rekey lock file aside: it holds nothing)."""
    return {
        str(p): p.read_bytes()
        for d in dirs
        for p in sorted(d.iterdir())
        if p.is_file() and p.name != ".rekey.lock"
    }


def keys_dir(tmp: Path) -> Path:
    d = tmp / "keys"
    KeyDirectory.create(d, OLD)
    SigningKey.generate().save(d / "extra-signing.key", OLD)  # any key file in it counts
    return d


def opens_keys_dir(d: Path, passphrase: bytes) -> tuple[bytes, list[bytes]]:
    kd = KeyDirectory.load(d)
    ik = kd.institution_key(1, passphrase)
    SigningKey.load(d / "extra-signing.key", passphrase)
    return ik.public_key.raw, [k.public.raw for k in kd.keyring(passphrase).keys.values()]


def test_keys_directory_factory_and_one_file_move_to_a_new_passphrase(tmp_path: Path) -> None:
    d = keys_dir(tmp_path)
    before = opens_keys_dir(d, OLD)
    trust = (d / "trust.json").read_bytes()
    pw_old, pw_new = tmp_path / "old.pass", tmp_path / "new.pass"
    pw_old.write_bytes(OLD + b"\n")
    pw_new.write_bytes(NEW + b"\n")
    done = subprocess.run(
        [sys.executable, "-c", CHEAP_KDF + "import runpy; runpy.run_module('safescan',"
         " run_name='__main__')", "keys", "rekey", str(d), "--passphrase-file", str(pw_old),
         "--new-passphrase-file", str(pw_new), "--json"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["resealed"] == 3 and out["passphrase"] == "changed"
    assert opens_keys_dir(d, NEW) == before  # the same keys
    with pytest.raises(KeyFileError):
        opens_keys_dir(d, OLD)
    assert (d / "trust.json").read_bytes() == trust  # public files untouched
    assert all(not p.name.endswith((".rekey-old", ".rekey-new", ".tmp")) for p in d.iterdir())
    assert not (d / JOURNAL).exists()
    # a carrier factory's directory (the manufacturer key)
    f = tmp_path / "factory"
    pin = Factory.create(f, OLD, kid=7).pin()
    assert rekey_path(f, OLD, NEW)["resealed"] == 1
    assert Factory.load(f, NEW).pin() == pin
    with pytest.raises(KeyFileError):
        Factory.load(f, OLD)
    # one signing key (a merchant's), and a legacy one moved to the sealed format
    one = tmp_path / "merchant.key"
    key = SigningKey.generate()
    key.save(one, OLD)
    rekey_path(one, OLD, NEW)
    assert SigningKey.load(one, NEW).public_key == key.public_key
    legacy = tmp_path / "legacy.key"
    raw = Ed25519PrivateKey.generate()
    legacy.write_bytes(
        raw.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(OLD),
        )
    )
    public = SigningKey.load(legacy, OLD).public_key
    assert keyfile.is_legacy(legacy.read_bytes())
    assert rekey_path(legacy, OLD, OLD)["resealed"] == 1
    assert keyfile.is_sealed(legacy.read_bytes())
    assert SigningKey.load(legacy, OLD).public_key == public
    assert rekey_path(legacy, OLD, OLD)["resealed"] == 0  # nothing left to do


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:150])


def _damage_pem(path: Path) -> None:
    path.write_text(path.read_text().replace("A", "B", 3).replace("a", "b", 3))


def _spoiled(change: Callable[[Path], None]) -> Callable[[Path], bytes]:
    def spoil(d: Path) -> bytes:
        change(d)
        return OLD

    return spoil


SPOILS: dict[str, Callable[[Path], bytes]] = {
    "wrong passphrase": lambda d: b"not the passphrase",
    "one file under another passphrase": _spoiled(
        lambda d: SigningKey.generate().save(d / "extra-signing.key", b"another passphrase")
    ),
    "a file truncated": _spoiled(lambda d: _truncate(d / "institution-1.key")),
    "a sealed file's byte flipped": _spoiled(lambda d: _flip(d / "institution-1.key")),
    "a scheme file's pem damaged": _spoiled(lambda d: _damage_pem(d / "scheme-1.key")),
}


@pytest.mark.parametrize("spoil", sorted(SPOILS))
def test_a_refused_rekey_changes_nothing_and_leaves_nothing(tmp_path: Path, spoil: str) -> None:
    d = keys_dir(tmp_path)
    passphrase = SPOILS[spoil](d)
    files = snapshot(d)
    with pytest.raises(KeyFileError):
        rekey_path(d, passphrase, NEW)
    assert snapshot(d) == files
    assert sorted(p.name for p in d.iterdir()) == sorted(Path(p).name for p in files)


class Countdown:
    """Fails the ``n``-th call (0-based) of a function with ``fault``."""

    def __init__(self, real: Callable[..., Any], n: int, fault: Callable[[], Any]) -> None:
        self.real, self.n, self.fault, self.calls = real, n, fault, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls - 1 == self.n:
            self.fault()
        return self.real(*args)


def _count(tmp_path: Path, fn: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many times a successful rekey of a keys directory calls ``os.<fn>``."""
    d = keys_dir(tmp_path / "count")
    counter = Countdown(getattr(os, fn), -1, lambda: None)
    monkeypatch.setattr(os, fn, counter)
    rekey_path(d, OLD, NEW)
    monkeypatch.setattr(os, fn, counter.real)
    return counter.calls


@pytest.mark.parametrize("fn", ["replace", "fsync"])
def test_a_failure_at_any_rename_or_fsync_leaves_every_file_as_it_was(
    tmp_path: Path, fn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = _count(tmp_path, fn, monkeypatch)
    assert total >= 6
    failed = 0
    for n in range(total):
        d = keys_dir(tmp_path / f"{fn}-{n}")
        files = snapshot(d)
        before = opens_keys_dir(d, OLD)

        def boom() -> None:
            raise OSError(28, "No space left on device")

        real = getattr(os, fn)
        monkeypatch.setattr(os, fn, Countdown(real, n, boom))
        try:
            rekey_path(d, OLD, NEW)
        except KeyFileError:
            failed += 1
            monkeypatch.setattr(os, fn, real)
            assert opens_keys_dir(d, OLD) == before, n  # loaded (and put back if needed)
            assert snapshot(d) == files, n
        else:  # the failure came after the done point (cleaning up): all new
            monkeypatch.setattr(os, fn, real)
            assert opens_keys_dir(d, NEW) == before, n
    assert failed >= total // 2


KILLER = CHEAP_KDF + textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    n = int(sys.argv[2])
    real = os.replace
    calls = [0]
    def replace(*args):
        calls[0] += 1
        if calls[0] - 1 == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)
    os.replace = replace
    what = sys.argv[1]
    if what == "keys":
        from safescan.code.resealing import rekey_path
        rekey_path(Path(sys.argv[3]), sys.argv[4].encode(), sys.argv[5].encode())
    elif what == "institution":
        from safescan.institution.rekey import rekey
        rekey(Path(sys.argv[3]), sys.argv[4].encode(), sys.argv[5].encode())
    else:
        from safescan.merchant.cli_rekey import rekey_terminal
        rekey_terminal(Path(sys.argv[3]), sys.argv[4].encode(), sys.argv[5].encode())
    print("FINISHED")
    """
)


def kill_at(what: str, n: int, target: Path) -> bool:
    """Run a rekey that is killed (SIGKILL) at its ``n``-th rename; True if it was."""
    done = subprocess.run(
        [sys.executable, "-c", KILLER, what, str(n), str(target), OLD.decode(), NEW.decode()],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    if done.returncode == 0:
        assert "FINISHED" in done.stdout
        return False
    assert done.returncode == -signal.SIGKILL, done.stderr
    return True


def test_kill_at_any_rename_then_every_key_opens_as_before(tmp_path: Path) -> None:
    n, journals = 0, 0
    while True:
        d = keys_dir(tmp_path / f"k{n}")
        files = snapshot(d)
        before = opens_keys_dir(d, OLD)
        if not kill_at("keys", n, d):
            assert opens_keys_dir(d, NEW) == before
            break
        journals += (d / JOURNAL).exists()  # killed past the commit point: files mixed now
        assert opens_keys_dir(d, OLD) == before, n  # the load puts every file back
        assert {k: snapshot(d)[k] for k in files} == files, n  # byte for byte
        extra = [Path(k).name for k in snapshot(d) if k not in files]
        assert all(".rekey-" in name for name in extra), extra  # the next rekey's to remove
        assert not (d / JOURNAL).exists()
        n += 1
    assert n >= 6 and journals >= 3  # killed before, inside and after the renames


def institution(tmp: Path) -> tuple[Path, bytes]:
    keys = tmp / "inst.keys"
    inst = KeyStore(keys).create(OLD)
    pki.create_tls_dir(default_tls_dir(keys), passphrase=OLD)
    return keys, inst.secret


def test_institution_rekey_moves_every_key_including_tls_and_survives_kills(
    tmp_path: Path,
) -> None:
    keys, secret = institution(tmp_path / "ok")
    tls = default_tls_dir(keys)
    ca_pub = pki.load_ca_key(tls, OLD).public_key().public_numbers()
    out = institution_rekey(keys, OLD, NEW)
    assert out["passphrase"] == "changed"
    assert {f["file"] for f in out["files"] if f["resealed"]} == {
        "root-1.pem",
        "scheme-1.json",
        "secret.json",
        f"{tls.path.name}/ca.key",
    }
    assert KeyStore(keys).load(NEW).secret == secret
    assert pki.load_ca_key(tls, NEW).public_key().public_numbers() == ca_pub
    for load in (lambda: KeyStore(keys).load(OLD), lambda: pki.load_ca_key(tls, OLD)):
        with pytest.raises(KeyFileError):
            load()
    # a wrong passphrase: nothing changes in either directory
    files = snapshot(keys, tls.path)
    with pytest.raises(KeyFileError):
        institution_rekey(keys, b"not the passphrase", NEW)
    assert snapshot(keys, tls.path) == files
    # killed at every rename: both directories as they were at the next load
    n = 0
    while True:
        k, secret = institution(tmp_path / f"kill{n}")
        t = default_tls_dir(k)
        files = snapshot(k, t.path)
        if not kill_at("institution", n, k):
            assert KeyStore(k).load(NEW).secret == secret
            break
        if n % 2:  # the TLS directory's loader alone puts everything back too
            pki.load_ca_key(t, OLD)
        assert KeyStore(k).load(OLD).secret == secret, n
        pki.load_ca_key(t, OLD)
        assert {f: b for f, b in snapshot(k, t.path).items() if f in files} == files, n
        n += 1
    assert n >= 4


def test_pos_rekey_moves_both_keys_together_and_survives_kills(tmp_path: Path) -> None:
    from safescan.code.certs import TrustStore
    from safescan.merchant.cli_rekey import rekey_terminal
    from safescan.merchant.config import PosConfig

    def terminal(d: Path) -> tuple[Path, Path, bytes]:
        cfg = PosConfig(
            institution_url="https://127.0.0.1:9",
            merchant_id="M0000000001",
            api_seed=os.urandom(32),
            trust=TrustStore({1: SigningKey.generate().public_key}),
        )
        path = cfg.save(d / "pos.json", passphrase=OLD)
        seal = d / "pos-seal"
        seal.mkdir()
        SigningKey.generate().save(seal / "code-signing.key", OLD)
        return path, seal, cfg.api_seed

    path, seal, seed = terminal(tmp_path)
    # the shared passphrase is refused by `keys rekey` alone: it would strand the API key
    with pytest.raises(KeyFileError, match="pos rekey"):
        rekey_path(seal, OLD, NEW)
    assert rekey_terminal(path, OLD, NEW)["resealed"] == 2
    assert PosConfig.load(path, passphrase=NEW).api_seed == seed
    SigningKey.load(seal / "code-signing.key", NEW)
    with pytest.raises(KeyFileError):
        SigningKey.load(seal / "code-signing.key", OLD)
    n = 0
    while True:
        d = tmp_path / f"kill{n}"
        d.mkdir()
        path, seal, seed = terminal(d)
        files = snapshot(d, seal)
        if not kill_at("pos", n, path):
            break
        SigningKey.load(seal / "code-signing.key", OLD)  # through the pointer: all put back
        assert PosConfig.load(path, passphrase=OLD).api_seed == seed, n
        assert {f: b for f, b in snapshot(d, seal).items() if f in files} == files, n
        n += 1
    assert n >= 2


def test_pos_rekey_command(tmp_path: Path) -> None:
    """``safescan pos rekey``: a wrong current passphrase changes nothing (typed error); the
    right one moves both keys; the old passphrase then opens neither."""
    from safescan.code.certs import TrustStore
    from safescan.merchant.config import PosConfig

    cfg = PosConfig(
        institution_url="https://127.0.0.1:9",
        merchant_id="M0000000001",
        api_seed=os.urandom(32),
        trust=TrustStore({1: SigningKey.generate().public_key}),
    )
    path = cfg.save(tmp_path / "pos.json", passphrase=OLD)
    (tmp_path / "pos-seal").mkdir()
    SigningKey.generate().save(tmp_path / "pos-seal" / "code-signing.key", OLD)
    new = tmp_path / "new.pass"
    new.write_bytes(NEW + b"\n")
    files = snapshot(tmp_path, tmp_path / "pos-seal")

    def run(current: bytes) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_POS_")}
        env["SAFESCAN_POS_PASSPHRASE"] = current.decode()
        return subprocess.run(
            [sys.executable, "-c", CHEAP_KDF + "import runpy; runpy.run_module('safescan',"
             " run_name='__main__')", "pos", "rekey", "--config", str(path),
             "--new-passphrase-file", str(new), "--json"],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=env,
        )  # fmt: skip

    wrong = run(b"not the passphrase")
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert "passphrase" in json.loads(wrong.stdout)["error"]["message"]
    assert snapshot(tmp_path, tmp_path / "pos-seal") == files
    done = run(OLD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["resealed"] == 2
    assert PosConfig.load(path, passphrase=NEW).api_seed == cfg.api_seed
    with pytest.raises(KeyFileError):
        SigningKey.load(tmp_path / "pos-seal" / "code-signing.key", OLD)


def test_a_rekey_given_a_relative_path_is_put_back_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal names absolute paths: a rekey of ``keys`` (relative) stopped between two
    renames is put back by a loader running in another working directory."""
    d = keys_dir(tmp_path)
    files = snapshot(d)
    before = opens_keys_dir(d, OLD)
    monkeypatch.chdir(tmp_path)

    def crash() -> None:
        raise KeyboardInterrupt  # not an OSError: nothing in the process puts the files back

    real = os.replace
    monkeypatch.setattr(os, "replace", Countdown(real, 8, crash))  # the second rename
    with pytest.raises(KeyboardInterrupt):
        rekey_path(Path("keys"), OLD, NEW)
    monkeypatch.setattr(os, "replace", real)
    assert (d / JOURNAL).exists() and snapshot(d) != files  # mixed, as a kill leaves it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert opens_keys_dir(d, OLD) == before
    assert {k: snapshot(d)[k] for k in files} == files
