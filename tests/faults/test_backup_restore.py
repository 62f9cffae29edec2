"""The documented backup and restore procedure (`safescan institution backup` / `restore`),
SQLite and PostgreSQL, under a real server: an online backup of a populated institution,
payments after it, a restore into a fresh place; the audit passes and names the
acknowledged restore, and payments work on the restored database. A database put back any
other way (a file copy, a manual pg_restore, a forged acknowledgement) is still caught.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safescan.code import SigningKey
from safescan.institution.checkpoints import CheckpointFile, db_lookup, detect, read_records, sign
from safescan.institution.keystore import KeyStore
from tests.faults.places import FAST, Place, pay, place_for, served, wait_checkpointed
from tests.institution.conftest import BACKENDS
from tests.institution.harness import (
    PASSPHRASE,
    ServerProcess,
    World,
    init_db,
    institution_cli,
)

# Each test runs a dozen processes (init, servers, backup, restore, audits: ~30 s of CPU in
# all); at load 35-45 on two cores that is more than pytest's 300 s of wall clock, which three
# of them hit while a server was starting. Every process has its own bound (the CLI's 120 s,
# ServerProcess.start's CPU budget); this is only the guard against a hang.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(params=BACKENDS)
def place(request: pytest.FixtureRequest) -> Iterator[Place]:
    with place_for(request, "safescan-backup-") as p:
        yield p


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return institution_cli(*args)


def audit(url: str, keys: Path) -> tuple[int, dict[str, Any]]:
    out = cli("audit", "--db", url, "--keys", str(keys), "--json")
    return out.returncode, json.loads(out.stdout)


def backup(url: str, out: Path) -> dict[str, Any]:
    done = cli("backup", "--db", url, "--out", str(out), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def restore(p: Place, source: Path, url: str, reason: str = "disk lost") -> Any:
    return cli("restore", "--from", str(source), "--db", url, "--keys", str(p.keys),
               "--reason", reason, "--json")  # fmt: skip


def test_backup_restore_into_a_fresh_place_passes_the_audit_and_pays(place: Place) -> None:
    with served(place, carriers=2) as shop:  # the first carrier paid 500
        w, m, cid, (carrier, stolen) = shop.w, shop.m, shop.cid, shop.carriers
        # online: the server serves payments while the backup is taken
        manifest = backup(place.db_url, place.tmp / "inst.bak")
        assert manifest["backend"] == place.backend and len(manifest["sha256"]) == 64
        assert (place.tmp / "inst.bak").stat().st_mode & 0o077 == 0
        # after the backup: a payment and a revocation the backup lacks
        assert pay(w, m, carrier, 700).status_code == 201
        assert w.admin("POST", f"/v1/admin/carriers/{stolen.serial}/revoke").status_code == 200
        wait_checkpointed(place)
        shop.server.stop()

        fresh = place.fresh_url()
        out = restore(place, place.tmp / "inst.bak", fresh, "restored the 03:00 backup")
        assert out.returncode == 0, out.stdout + out.stderr
        done = json.loads(out.stdout)
        assert done["restored"] and done["reapplied_revocations"]  # the lost revocation is back
        assert any("restored from an older copy" in f for f in done["findings"])
        status, report = audit(fresh, place.keys)
        assert status == 0, report
        notes = " ".join(report["notes"])
        assert "acknowledged restore" in notes and "restored the 03:00 backup" in notes

        shop.serve(fresh)
        assert w.http.get("/health").status_code == 200
        r = pay(w, m, carrier, 300)  # its counter moved on since the backup: still accepted
        assert r.status_code == 201, r.text
        r = pay(w, m, stolen, 300)
        assert r.status_code == 403 and r.json()["error"]["code"] == "carrier_revoked"
        assert pay(w, m, w.carrier(cid), 200).status_code == 201
        wait_checkpointed(place.at(fresh))
        shop.server.stop()
        status, report = audit(fresh, place.keys)
        assert status == 0, report


def test_a_silent_restore_is_still_caught(place: Place) -> None:
    """Put back without the command: the file copy / manual pg_restore of the same backup, of
    it again after an acknowledged restore, and with a forged acknowledgement appended."""
    with served(place) as shop:  # paid 500
        bak = place.tmp / "silent.bak"
        backup(place.db_url, bak)
        assert pay(shop.w, shop.m, shop.carriers[0], 700).status_code == 201
        wait_checkpointed(place)
        shop.server.stop()

        # 1. the same backup put back by hand over the live database
        place.put_back(bak)
        status, report = audit(place.db_url, place.keys)
        assert status == 1
        assert any("restored from an older copy" in p for p in report["problems"])
        assert not any("acknowledged restore" in n for n in report["notes"])

        # 2. a forged acknowledgement (signed by a key that is not the institution's)
        lines = CheckpointFile(place.checkpoints).lines()
        last = json.loads(lines[-1])
        forged = {k: v for k, v in last.items() if k not in ("sig", "v", "kid")}
        forged.update(type="reconcile", restore={"reason": "trust me", "taken_at": 0})
        with place.checkpoints.open("a") as raw:  # a forger writes the file by hand
            raw.write(sign(SigningKey.generate(), 1, forged) + "\n")
        status, report = audit(place.db_url, place.keys)
        assert status == 1
        assert any("does not verify" in p for p in report["problems"])
        assert any("restored from an older copy" in p for p in report["problems"])
        shop.serve(healthy=False)
        assert shop.w.http.get("/health").status_code == 503
        shop.server.stop()


def test_a_silent_restore_after_an_acknowledged_one_is_caught(place: Place) -> None:
    fresh = place.fresh_url()
    with served(place) as shop:  # paid 500
        bak = place.tmp / "twice.bak"
        backup(place.db_url, bak)
        shop.server.stop()
        assert restore(place, bak, fresh, "moved to new disk").returncode == 0
        moved = place.at(fresh)
        shop.serve(fresh)
        assert pay(shop.w, shop.m, shop.carriers[0], 700).status_code == 201
        wait_checkpointed(moved)
        shop.server.stop()
        assert audit(fresh, place.keys)[0] == 0
        moved.put_back(bak)  # the acknowledged backup again, by hand, after new payments
        status, report = audit(fresh, place.keys)
        assert status == 1
        assert any("restored from an older copy" in p for p in report["problems"])


def test_a_replayed_acknowledgement_does_not_hide_a_later_silent_restore(place: Place) -> None:
    """The attack the hash chain is for: after an acknowledged restore and new payments, the
    copy taken right after the acknowledgement is put back by hand, and the genuine signed
    acknowledgement (alone, with the checkpoint after it, or moved) is appended again so that
    it is the newest record by position. By position alone nothing would be compared; the
    broken chain is reported and the server refuses."""
    fresh = place.fresh_url()
    with served(place) as shop:  # paid 500
        bak = place.tmp / "first.bak"
        backup(place.db_url, bak)
        shop.server.stop()
        assert restore(place, bak, fresh, "disk lost").returncode == 0
        moved = place.at(fresh)
        after_ack = place.tmp / "after-ack.bak"
        backup(fresh, after_ack)  # holds everything the acknowledgement recorded
        shop.serve(fresh)
        assert pay(shop.w, shop.m, shop.carriers[0], 700).status_code == 201
        wait_checkpointed(moved)
        shop.server.stop()
        assert audit(fresh, place.keys)[0] == 0
        moved.put_back(after_ack)  # the payment of 700 is gone
        lines = CheckpointFile(place.checkpoints).lines()
        status, report = audit(fresh, place.keys)
        assert status == 1 and any("restored from an older copy" in p for p in report["problems"])
        ack = max(i for i, x in enumerate(lines) if json.loads(x)["type"] == "reconcile")
        replays = {
            "acknowledgement appended": [*lines, lines[ack]],
            "with its checkpoint": [*lines, lines[ack], lines[ack + 1]],
            "moved to the end": [*lines[:ack], *lines[ack + 1 :], lines[ack]],
        }
        for name, forged in replays.items():
            place.checkpoints.write_text("".join(x + "\n" for x in forged))
            status, report = audit(fresh, place.keys)
            assert status == 1, name
            assert any("chain is broken" in p for p in report["problems"]), (name, report)
            # the records themselves all verify: by position, the replay would have hidden it
            records, _ = read_records(forged, moved_trust(place), None)
            hidden = moved.read(lambda c, r=records: detect(r, db_lookup(c)))
            assert hidden.rolled_back == [], name
        shop.serve(fresh, healthy=False)
        refused = shop.w.http.get("/health")
        assert refused.status_code == 503 and "chain is broken" in refused.text
        ready = shop.w.http.get("/readyz")  # what load balancers and orchestrators ask
        assert ready.status_code == 503 and "chain is broken" in ready.text
        assert ready.json()["error"]["code"] == "database_rolled_back"
        shop.server.stop()


def test_a_restore_without_the_checkpoint_file_needs_the_explicit_restart(place: Place) -> None:
    """The host is lost with its checkpoint file: the restored database saw that file, so the
    restore is refused (typed, the target left empty) until the operator says to start a new
    chain; then the audit passes and notes the restore."""
    init_db(place.db_url, place.keys)
    bak = place.tmp / "lost.bak"
    backup(place.db_url, bak)
    place.checkpoints.unlink()
    fresh = place.fresh_url()
    refused = restore(place, bak, fresh, "host lost")
    assert refused.returncode != 0
    err = json.loads(refused.stdout)["error"]
    assert err["code"] == "checkpoint_chain_broken" and "is missing" in err["message"]
    assert not place.checkpoints.exists()
    done = cli("restore", "--from", str(bak), "--db", fresh, "--keys", str(place.keys),
               "--reason", "host lost", "--restart-checkpoints", "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    status, report = audit(fresh, place.keys)
    assert status == 0, report
    assert any("acknowledged restore" in n for n in report["notes"])
    first = json.loads(CheckpointFile(place.checkpoints).lines()[0])
    assert first["type"] == "reconcile" and first["n"] > 1 and "restart" in first


def moved_trust(place: Place) -> Any:
    """The institution's trust store, from its key directory."""
    return KeyStore(place.keys).load(PASSPHRASE.encode()).trust_store()


def test_restore_refuses_bad_input_and_changes_nothing(place: Place) -> None:
    init_db(place.db_url, place.keys)
    bak = place.tmp / "good.bak"
    manifest = backup(place.db_url, bak)
    cp_before = CheckpointFile(place.checkpoints).lines()

    def refused(source: Path, url: str, reason: str = "test", code: str = "backup_error") -> None:
        out = restore(place, source, url, reason)
        assert out.returncode == 2, out.stdout + out.stderr
        assert json.loads(out.stdout)["error"]["code"] == code, out.stdout
        assert CheckpointFile(place.checkpoints).lines() == cp_before
        if url == fresh and url.startswith("sqlite:///"):
            assert not Path(url.removeprefix("sqlite:///")).exists()

    def variant(name: str, data: bytes, doc: dict[str, Any] | None = None) -> Path:
        path = place.tmp / name
        path.write_bytes(data)
        Path(f"{path}.manifest.json").write_text(json.dumps(doc or manifest))
        return path

    good = bak.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    fresh = place.fresh_url()
    refused(variant("flipped.bak", bytes(flipped)), fresh)  # one bit changed
    refused(variant("short.bak", good[: len(good) // 2]), fresh)  # truncated
    refused(variant("empty.bak", b""), fresh)
    # the manifest lies about the backend, or is not a manifest
    refused(variant("other.bak", good, {**manifest, "backend": "other"}), fresh)
    refused(variant("notmf.bak", good, {"type": "something"}), fresh)
    no_manifest = place.tmp / "alone.bak"
    no_manifest.write_bytes(good)
    refused(no_manifest, fresh)
    refused(bak, fresh, reason="   ")  # no reason given
    # a backup of another institution (the checkpoint file names another database)
    other_keys = place.tmp / "other-keys"
    other_url = place.fresh_url()
    init_db(other_url, other_keys)
    foreign = place.tmp / "foreign.bak"
    backup(other_url, foreign)
    refused(foreign, fresh)
    # the target is not empty: the live database itself
    refused(bak, place.db_url)
    # the right backup restores after all that
    out = restore(place, bak, fresh, "after the refusals")
    assert out.returncode == 0, out.stdout + out.stderr


def test_sqlite_backup_taken_under_concurrent_payments_is_consistent(tmp_path: Path) -> None:
    """The online backup API, not a file copy: backups taken while payments commit (WAL) are
    each one consistent snapshot: integrity check and the whole audit pass on every copy."""
    import threading

    from safescan.institution.backup import backup as take_backup

    url = f"sqlite:///{tmp_path / 'live.db'}"
    keys = tmp_path / "keys"
    token = init_db(url, keys)
    server = ServerProcess(url, keys, extra=[*FAST, "--merchant-rate", "0"]).start()
    w = World(server, token)
    try:
        m = w.merchant()
        cid = w.customer({"EUR": 1_000_000})
        carrier = w.carrier(cid)
        orders = [m.order([("Tea", 1, 100 + i)]) for i in range(60)]
        statuses: list[int] = []

        def payer() -> None:
            for o in orders:
                auth = carrier.authorize(o["code"])
                statuses.append(w.pay(o["code"], auth, idem=f"k-{o['order_id']}").status_code)

        thread = threading.Thread(target=payer)
        thread.start()
        copies, during = [], []
        while thread.is_alive() or not copies:
            copies.append(tmp_path / f"hot-{len(copies)}.bak")
            take_backup(url, copies[-1])  # in-process: many backups while payments commit
            during.append(len(statuses))
        thread.join()
        assert statuses == [201] * len(orders)
        assert len(set(during)) >= 2, during  # taken at different points of the payments
        for copy in copies:  # every copy is one file that passes SQLite's integrity check
            assert not Path(f"{copy}-wal").exists()
            with sqlite3.connect(copy) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for copy in {copies[0], copies[len(copies) // 2], copies[-1]}:  # and the whole audit
            out = cli("audit", "--db", f"sqlite:///{copy}", "--json")
            assert out.returncode == 0, (copy.name, out.stdout)
    finally:
        w.close()
        server.stop()


def _target_state(url: str) -> Any:
    """What a restore must leave as it found when it fails: the SQLite file's absence, or every
    table, view, sequence, function and type of the PostgreSQL database."""
    from safescan.institution.backup import _backend, _pg_objects

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return sorted(p.name for p in path.parent.glob(path.name + "*"))
    return sorted(_pg_objects(_backend(url)[1]))


def test_a_restore_failing_late_leaves_the_target_as_it_was(place: Place) -> None:
    """All or nothing: a restore that fails after it began placing the backup leaves the target
    exactly as it found it (PostgreSQL: no table, sequence, function or type left behind), with
    a typed error (``backup_error``, exit 2), and the same target takes the good backup
    afterwards. Failures injected late: the last part of the backup corrupted (with a manifest
    that matches it, as when the dump was damaged before its manifest was written), in two
    places; and a backup placed whole but refused at the acknowledgement (its manifest names
    another database than the one inside, with no checkpoint records to catch it earlier)."""
    init_db(place.db_url, place.keys)
    bak = place.tmp / "good.bak"
    manifest = backup(place.db_url, bak)
    good = bak.read_bytes()
    fresh = place.fresh_url()
    before = _target_state(fresh)
    empty_checkpoints = place.tmp / "no-checkpoints"

    def damaged(name: str, data: bytes, doc: dict[str, Any]) -> Path:
        import hashlib

        path = place.tmp / name
        path.write_bytes(data)
        doc = {**doc, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        Path(f"{path}.manifest.json").write_text(json.dumps(doc))
        return path

    def corrupt_tail(offset_from_end: int, span: int) -> bytes:
        data = bytearray(good)
        for i in range(len(data) - offset_from_end, len(data) - offset_from_end + span):
            data[i] ^= 0x5A
        return bytes(data)

    late = {
        # PostgreSQL: inside the last table's data block; SQLite: the last page's header (its
        # free bytes at the very end can change unnoticed: that is no failure to inject)
        "last bytes": damaged(
            "tail.bak",
            corrupt_tail(64, 64) if place.backend == "postgresql" else corrupt_tail(4096, 16),
            manifest,
        ),
        "last block": damaged("block.bak", corrupt_tail(min(len(good) // 4, 4096), 256), manifest),
        "acknowledgement": damaged("other-db.bak", good, {**manifest, "db": "0" * 64}),
    }
    for what, source in late.items():
        out = cli("restore", "--from", str(source), "--db", fresh, "--keys", str(place.keys),
                  "--checkpoints", str(empty_checkpoints), "--reason", what, "--json")  # fmt: skip
        assert out.returncode == 2, (what, out.stdout + out.stderr)
        assert json.loads(out.stdout)["error"]["code"] == "backup_error", (what, out.stdout)
        assert _target_state(fresh) == before, what  # nothing left behind
    assert not empty_checkpoints.exists() or empty_checkpoints.read_text() == ""
    out = restore(place, bak, fresh, "the good backup after the failed ones")
    assert out.returncode == 0, out.stdout + out.stderr
    assert audit(fresh, place.keys)[0] == 0
