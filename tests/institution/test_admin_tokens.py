"""Administrator tokens: `safescan institution admin-token create | list | revoke`.

Its own module: the test revokes the token the module's server was initialised with.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.institution.harness import World, institution_cli


def _cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return institution_cli("admin-token", *args, "--db", world.db_url)  # type: ignore[attr-defined]


def _as(world: World, token: str, cid: str) -> int:
    r = world.http.get(f"/v1/admin/customers/{cid}", headers={"Authorization": f"Bearer {token}"})
    return r.status_code


def test_a_leaked_admin_token_is_replaced_and_revoked_without_downtime(world: World) -> None:
    cid = world.customer()
    original = world.admin_token
    listed = _cli(world, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    first = [row["id"] for row in json.loads(listed.stdout)]
    assert len(first) == 1 and original not in listed.stdout

    made = _cli(world, "create")
    assert made.returncode == 0, made.stderr
    found = re.search(r"administrator token (\d+) created", made.stdout)
    assert found is not None, made.stdout
    new_id, token = int(found.group(1)), made.stdout.split()[-1]
    assert token.startswith("adm_") and token != original
    assert _as(world, token, cid) == 200 and _as(world, original, cid) == 200  # both live

    revoked = _cli(world, "revoke", str(first[0]))
    assert revoked.returncode == 0, revoked.stderr
    assert _as(world, original, cid) == 401  # at once, without a restart
    assert _as(world, token, cid) == 200
    assert [row["id"] for row in json.loads(_cli(world, "list", "--json").stdout)] == [new_id]

    last = _cli(world, "revoke", str(new_id))
    assert last.returncode == 2 and "last live administrator token" in last.stderr
    unknown = _cli(world, "revoke", "999999")
    assert unknown.returncode == 2 and "no live administrator token 999999" in unknown.stderr
    assert _as(world, token, cid) == 200
    world.admin_token = token  # for the fixture's own clean-up

    audit = institution_cli("audit", "--db", world.db_url, "--json")  # type: ignore[attr-defined]
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_admin_token_commands_refuse_a_database_that_was_never_initialised(
    tmp_path: Path,
) -> None:
    for args in (["create"], ["list"], ["revoke", "1"]):
        out = institution_cli("admin-token", *args, "--db", f"sqlite:///{tmp_path / 'empty.db'}")
        assert out.returncode == 2, (args, out.stderr)
        assert "not initialised" in out.stderr and "Traceback" not in out.stderr
