"""``safescan code make`` reads its order file with the shared strict JSON rule
(safescan.code.strictjson, review): a lone surrogate, a number that reads as infinity, a key
named twice, NaN or deep nesting is the typed KeyFileError and nothing is written. Before,
read_order had its own partial copy of web.jsonbody's rule: the surrogate, ``1e999`` and the
repeated key (the last value silently won) were read and the code was made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safescan.code import strictjson

ORDER = (
    '{"merchant": {"id": "m_1", "name": "B", "city": "Berlin", "country": "DE", "mcc": 5462},'
    ' "currency": "EUR", %s'
    ' "items": [{"name": "Brezel", "quantity": 3, "unit_price": 95}]}'
)

HOSTILE = {
    "lone surrogate": ORDER % '"note": "\\ud800",',
    "lone surrogate key": ORDER % '"\\udc80": 1,',
    "1e999": ORDER % '"note": 1e999,',
    "NaN": ORDER % '"note": NaN,',
    "duplicate key": ORDER % '"currency": "USD",',
    "deep nesting": ORDER % ('"note": ' + "[" * 100_000 + "]" * 100_000 + ","),
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safescan.cli import app

    d = tmp_path_factory.mktemp("strict")
    env = {"SAFESCAN_PASSPHRASE": "correct horse"}
    r = CliRunner().invoke(app, ["keys", "init", str(d / "kd")], env=env)
    assert r.exit_code == 0, r.output
    return d


def make(keys: Path, order: str, out: str) -> tuple[int, str]:
    from safescan.cli import app

    (keys / f"{out}.json").write_text(order)
    args = ["code", "make", str(keys / f"{out}.json"), "--keys", str(keys / "kd")]
    env = {"SAFESCAN_PASSPHRASE": "correct horse"}
    r = CliRunner().invoke(app, [*args, "--out", str(keys / out), "--json"], env=env)
    return r.exit_code, r.output


def test_the_plain_order_is_made(keys: Path) -> None:
    code, output = make(keys, ORDER % "", "plain")
    assert code == 0, output
    assert (keys / "plain.txt").read_text().startswith("SS1:")


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_order_file_is_a_typed_error_and_nothing_is_written(
    keys: Path, case: str
) -> None:
    out = "o" + str(sorted(HOSTILE).index(case))
    code, output = make(keys, HOSTILE[case], out)
    assert code == 2, output
    doc = json.loads(output)
    assert doc["error"]["type"] == "KeyFileError", doc
    assert "not valid JSON" in doc["error"]["message"], doc
    assert not [s for s in (".txt", ".png", ".svg") if (keys / (out + s)).exists()], "written"


def test_the_strict_reader_names_no_more_than_twenty_characters_of_a_key() -> None:
    key = "k" * 200
    with pytest.raises(strictjson.StrictJSONError) as caught:
        strictjson.loads(json.dumps({key: 1}).encode()[:-1] + f', "{key}": 2}}'.encode())
    assert "k" * 21 not in str(caught.value)
