"""`safescan keys ...` and `safescan code make`: keys, certificates, making codes.

The `code` group itself (and `code inspect`) is in :mod:`safescan.code.code_cli`.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from safescan.code import strictjson
from safescan.code.certs import Certificate, Role, issue_certificate
from safescan.code.cli_app import new_app
from safescan.code.cli_options import JsonOpt as JsonOpt
from safescan.code.cli_options import PassphraseFile as PassphraseFile
from safescan.code.cli_options import read_passphrase as read_passphrase
from safescan.code.currency import currency as lookup_currency
from safescan.code.display import term
from safescan.code.envelope import Issuer, encode_text, seal
from safescan.code.errors import KeyFileError, SafescanError
from safescan.code.keys import SchemeKey, SchemePublicKey, SigningKey, VerifyKey
from safescan.code.keystore import (
    TRUST_FILE,
    KeyDirectory,
    load_trust_file,
    read_trust_doc,
    write_trust_doc,
)
from safescan.code.numbers import MAX_QUANTITY, json_int
from safescan.code.output import emit_json, error_doc
from safescan.code.payment import DynamicCode, LineItem, Merchant, StaticCode
from safescan.code.schemelist import SchemeKeyList
from safescan.code.smallfile import read_bounded

keys_app = new_app(help="Generate and inspect keys and certificates.")
console = Console()
err_console = Console(stderr=True)


def fail(exc: SafescanError, as_json: bool = False) -> typer.Exit:
    """Print a typed error (JSON on stdout with ``--json``) and return the exit to raise."""
    if as_json:
        emit_json(error_doc(exc))
    else:
        err_console.print(f"[bold red]{term(exc.type)}[/]: {term(exc.message)}")
    return typer.Exit(2)


# --- keys ----------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    directory: Path,
    kid: Annotated[int, typer.Option(help="Key id of the first keys")] = 1,
    passphrase_file: PassphraseFile = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an institution key directory: signing key, scheme code key, trust.json."""
    try:
        pw = read_passphrase(passphrase_file, confirm=True)
        kd = KeyDirectory.create(directory, pw, kid=kid)
    except SafescanError as exc:
        raise fail(exc, as_json) from None
    if as_json:
        emit_json({"directory": str(kd.path), "institution_kid": kid, "scheme_kid": kid})
        return
    console.print(
        f"keys written to [bold]{term(kd.path)}[/]"
        f" (institution key {term(kid)}, scheme key {term(kid)})"
    )


@keys_app.command("signing")
def keys_signing(
    out: Path, passphrase_file: PassphraseFile = None, as_json: JsonOpt = False
) -> None:
    """Generate an Ed25519 signing key (e.g. a merchant's), stored encrypted."""
    try:
        key = SigningKey.generate()
        key.save(out, read_passphrase(passphrase_file, confirm=True))
    except SafescanError as exc:
        raise fail(exc, as_json) from None
    if as_json:
        emit_json({"path": str(out), "public_key": key.public_key.hex()})
        return
    console.print(f"signing key written to {term(out)}; public key {term(key.public_key.hex())}")


@keys_app.command("scheme")
def keys_scheme(
    directory: Path,
    kid: Annotated[int, typer.Option(help="Key id of the new scheme key (1-255)")],
    retire_old_in: Annotated[
        int | None, typer.Option(help="Retire the previous scheme keys this many seconds from now")
    ] = None,
    passphrase_file: PassphraseFile = None,
    as_json: JsonOpt = False,
) -> None:
    """Rotate: add a new scheme code key to a key directory (optionally retiring old ones)."""
    try:
        pw = read_passphrase(passphrase_file)
        kd = KeyDirectory.load(directory)
        ring = kd.keyring(pw)
        if kid in ring.keys:
            raise KeyFileError(f"scheme key {kid} already exists")
        new = SchemeKey.generate(kid)
        if retire_old_in is not None:
            for old in ring.keys.values():
                old.retire_at = int(time.time()) + retire_old_in
                old.save(directory / f"scheme-{old.kid}.key", pw)
        new.save(directory / f"scheme-{kid}.key", pw)
        doc = read_trust_doc(directory / TRUST_FILE)
        doc["scheme_keys"][str(kid)] = new.public.raw.hex()
        write_trust_doc(directory / TRUST_FILE, doc)
    except SafescanError as exc:
        raise fail(exc, as_json) from None
    if as_json:
        emit_json({"directory": str(directory), "scheme_kid": kid})
        return
    console.print(f"scheme key {term(kid)} added to {term(directory)}")


@keys_app.command("rekey")
def keys_rekey(
    path: Annotated[Path, typer.Argument(help="a key directory, or one key file")],
    passphrase_file: PassphraseFile = None,
    new_passphrase_file: Annotated[
        Path | None,
        typer.Option(help="re-seal under the passphrase in this file (default: the same one)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-seal private key files in the current format (scrypt + AES-GCM), under a new
    passphrase with --new-passphrase-file: a `keys init` directory, a carrier factory's, or
    one signing key. Every file must open first; then all are rewritten or none."""
    from safescan.code.resealing import rekey_path

    try:
        old = read_passphrase(passphrase_file)
        new = old if new_passphrase_file is None else read_passphrase(new_passphrase_file)
        out = rekey_path(path, old, new)
    except SafescanError as exc:
        raise fail(exc, as_json) from None
    if as_json:
        emit_json(out)
        return
    for f in out["files"]:
        console.print(f"{term(f['file'])}: {'re-sealed' if f['resealed'] else 'left as it is'}")
    console.print(f"{int(out['resealed'])} key file(s) re-sealed in {term(out['path'])}")


@keys_app.command("certify")
def keys_certify(
    keys: Annotated[Path, typer.Option(help="Institution key directory")],
    role: Annotated[str, typer.Option(help="merchant or carrier")],
    subject: Annotated[str, typer.Option(help="Merchant id, or carrier:<serial>")],
    public_key: Annotated[str, typer.Option(help="Ed25519 public key, 64 hex digits")],
    out: Annotated[Path, typer.Option(help="Where to write the certificate (CBOR)")],
    serial: Annotated[int | None, typer.Option(help="Serial (default: random)")] = None,
    days: Annotated[int, typer.Option(help="Validity in days")] = 365,
    kid: Annotated[int, typer.Option(help="Institution key id")] = 1,
    name: Annotated[str | None, typer.Option(help="Merchant name (merchant role)")] = None,
    city: Annotated[str | None, typer.Option(help="Merchant city (merchant role)")] = None,
    country: Annotated[str | None, typer.Option(help="ISO 3166 country (merchant role)")] = None,
    mcc: Annotated[int | None, typer.Option(help="Category code (merchant role)")] = None,
    passphrase_file: PassphraseFile = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue an institution-signed certificate for a merchant or key-carrier key.

    A merchant certificate certifies the whole identity customers are shown: give --name,
    --city, --country and --mcc (the subject is the merchant id).
    """
    try:
        try:
            role_ = Role[role.upper()]
            pk = VerifyKey(bytes.fromhex(public_key))
        except (KeyError, ValueError):
            raise KeyFileError("role must be merchant or carrier; key must be 64 hex") from None
        identity: Merchant | None = None
        if role_ is Role.MERCHANT:
            if name is None or city is None or country is None or mcc is None:
                raise KeyFileError("a merchant certificate needs --name, --city, --country, --mcc")
            identity = Merchant(subject, name, city, country, mcc)
        elif (name, city, country, mcc) != (None, None, None, None):
            raise KeyFileError("only a merchant certificate certifies a name, city, country, mcc")
        kd = KeyDirectory.load(keys)
        ik = kd.institution_key(kid, read_passphrase(passphrase_file))
        now = int(time.time())
        cert = issue_certificate(
            ik,
            kid,
            serial=serial if serial is not None else secrets.randbits(48),
            role=role_,
            subject=subject,
            public_key=pk,
            not_before=now - 60,
            not_after=now + days * 86400,
            merchant=identity,
        )
        out.write_bytes(cert.to_bytes())
    except SafescanError as exc:
        raise fail(exc, as_json) from None
    except OSError as exc:
        raise fail(KeyFileError(f"cannot write {out}: {exc.strerror}"), as_json) from None
    if as_json:
        emit_json({"serial": cert.serial, "bytes": len(cert.to_bytes()), "path": str(out)})
        return
    console.print(
        f"certificate {term(cert.serial)} ({len(cert.to_bytes())} bytes) written to {term(out)}"
    )


@keys_app.command("show")
def keys_show(path: Path, as_json: JsonOpt = False) -> None:
    """Show the public facts of a trust file or certificate (never private key material)."""
    try:
        if path.suffix == ".json":
            trust, scheme = load_trust_file(path)
            if as_json:
                emit_json(
                    {
                        "institution_keys": {
                            str(k): v.hex() for k, v in sorted(trust.institution_keys.items())
                        },
                        "scheme_keys": {str(k): v.raw.hex() for k, v in sorted(scheme.items())},
                    }
                )
                return
            table = Table("what", "key id", "public key")
            for kid, key in sorted(trust.institution_keys.items()):
                table.add_row("institution signing key", term(str(kid)), term(key.hex()))
            for kid, sk in sorted(scheme.items()):
                table.add_row("scheme code key", term(str(kid)), term(sk.raw.hex()))
            console.print(table)
            return
        cert = Certificate.from_bytes(read_bounded(path, what="a certificate"))
    except OSError as exc:
        raise fail(KeyFileError(f"cannot read {path}: {exc.strerror}"), as_json) from None
    except SafescanError as exc:
        raise fail(exc, as_json) from None
    identity = cert.merchant
    if as_json:
        emit_json(
            {
                "version": cert.version,
                "serial": cert.serial,
                "role": cert.role.name.lower(),
                "subject": cert.subject,
                "merchant": None
                if identity is None
                else {
                    "name": identity.name,
                    "city": identity.city,
                    "country": identity.country,
                    "mcc": f"{identity.mcc:04d}",
                },
                "public_key": cert.public_key.hex(),
                "not_before": cert.not_before,
                "not_after": cert.not_after,
                "issuer_kid": cert.issuer_kid,
            }
        )
        return
    for label, value in (
        ("version", cert.version),
        ("serial", cert.serial),
        ("role", cert.role.name.lower()),
        ("subject", cert.subject),
        *(
            (
                ("name", identity.name),
                ("city", identity.city),
                ("country", identity.country),
                ("mcc", f"{identity.mcc:04d}"),
            )
            if identity is not None
            else ()
        ),
        ("public key", cert.public_key.hex()),
        ("not before", _ts(cert.not_before)),
        ("not after", _ts(cert.not_after)),
        ("issuer key id", cert.issuer_kid),
    ):
        console.print(f"{term(label):>14}: {term(value)}")


def _ts(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


# --- codes ---------------------------------------------------------------------------------


def read_order(path: Path) -> dict[str, Any]:
    """The order document of ``path``: at most :data:`FILE_LIMIT` bytes of UTF-8 JSON whose
    top level is an object; ``KeyFileError`` otherwise (redteam: nesting deeper than the
    interpreter's recursion limit was a ``RecursionError`` traceback; ``/dev/zero`` was read
    whole; review: a lone surrogate, ``1e999`` or a key named twice was read), ``OSError``
    when it cannot be read. The JSON is read by :func:`safescan.code.strictjson.loads`."""
    raw = read_bounded(path, what="an order file")
    try:
        doc = strictjson.loads(raw)
    except strictjson.StrictJSONError as exc:
        raise KeyFileError(f"the order file is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise KeyFileError("the order file must hold a JSON object (see docs/operations.md)")
    return doc


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KeyFileError(f"the order file's {what} must be a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise KeyFileError(f"the order file's {what} must be a JSON list")
    return value


def order_from_json(doc: dict[str, Any], now: int) -> DynamicCode | StaticCode:
    """Build a code from an order document (see docs/operations.md for its shape)."""
    try:
        m = _object(doc["merchant"], "merchant")
        merchant = Merchant(m["id"], m["name"], m["city"], m["country"], m["mcc"])
        kind = doc.get("kind", "dynamic")
        cur = doc.get("currency")
        if kind == "static":
            return StaticCode(
                merchant,
                None if cur is None else lookup_currency(cur).numeric,
                now,
                now
                + json_int(doc.get("expires_in", 365 * 86400), field="expires_in", maximum=2**40),
            )
        items = tuple(
            LineItem(
                i["name"],
                json_int(i["quantity"], field="quantity", maximum=MAX_QUANTITY),
                json_int(i["unit_price"], field="unit_price"),
            )
            for i in (_object(one, "items entry") for one in _list(doc["items"], "items"))
        )
        return DynamicCode(
            merchant=merchant,
            order_id=doc.get("order_id") or "o_" + secrets.token_hex(5),
            items=items,
            total=json_int(doc.get("total", sum(i.amount for i in items)), field="total"),
            currency=lookup_currency(str(cur)).numeric,
            issued_at=now,
            expires_at=now
            + json_int(doc.get("expires_in", 300), field="expires_in", maximum=2**40),
            nonce=secrets.token_bytes(8),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"the order file is missing or has a bad field: {exc}") from None


def code_make(
    order: Annotated[Path, typer.Argument(help="Order JSON file")],
    out: Annotated[Path, typer.Option(help="Output prefix: writes PREFIX.txt, .png, .svg")],
    keys: Annotated[
        Path | None, typer.Option(help="Institution key directory (institution-signed codes)")
    ] = None,
    kid: Annotated[int, typer.Option(help="Institution signing key id")] = 1,
    merchant_key: Annotated[
        Path | None, typer.Option(help="Sign as the merchant with this key (needs --merchant-cert)")
    ] = None,
    merchant_cert: Annotated[Path | None, typer.Option(help="The merchant's certificate")] = None,
    trust: Annotated[
        Path | None,
        typer.Option(help="Public trust.json: institution and scheme public keys (merchant)"),
    ] = None,
    scheme_keys: Annotated[
        Path | None,
        typer.Option(help="Signed scheme key list (CBOR, as published by GET /v1/keys)"),
    ] = None,
    passphrase_file: PassphraseFile = None,
    as_json: JsonOpt = False,
) -> None:
    """Build, sign and seal a dynamic or static code; write text, PNG and SVG.

    Institution-signed: --keys. Merchant-signed: --merchant-key and --merchant-cert with the
    public scheme key(s) only (--trust, optionally --scheme-keys): no institution secret.
    The order's merchant block may be left out for a merchant-signed code: the certificate's
    identity is the code's.
    """
    from safescan.code import qr  # numpy, Pillow, zxing-cpp: imported only to write images

    now = int(time.time())
    try:
        doc = read_order(order)
        pw = read_passphrase(passphrase_file)
        if merchant_key is not None:
            if merchant_cert is None:
                raise KeyFileError("--merchant-key needs --merchant-cert")
            cert = Certificate.from_bytes(read_bounded(merchant_cert, what="a certificate"))
            if "merchant" not in doc and cert.merchant is not None:
                m = cert.merchant
                doc["merchant"] = {
                    "id": m.id,
                    "name": m.name,
                    "city": m.city,
                    "country": m.country,
                    "mcc": m.mcc,
                }
            code = order_from_json(doc, now)
            issuer = Issuer.merchant(SigningKey.load(merchant_key, pw), cert)
            scheme_pub = _public_scheme_key(trust, keys, scheme_keys, now, code.expires_at)
        else:
            if keys is None:
                raise KeyFileError("an institution-signed code needs --keys (or --merchant-key)")
            code = order_from_json(doc, now)
            kd = KeyDirectory.load(keys)
            scheme_pub = kd.keyring(pw).current(now).public
            issuer = Issuer.institution(kd.institution_key(kid, pw), kid)
        binary = seal(code, issuer, scheme_pub)
        text = encode_text(binary)
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.txt").write_text(text + "\n")
        qr.save_png(text, Path(f"{out}.png"))
        qr.save_svg(text, Path(f"{out}.svg"))
    except OSError as exc:
        raise fail(KeyFileError(f"file error: {exc}"), as_json) from None
    except ValueError as exc:
        raise fail(KeyFileError(f"the order file is not valid JSON: {exc}"), as_json) from None
    except SafescanError as exc:
        raise fail(exc, as_json) from None
    if as_json:
        emit_json(
            {
                "kind": code.kind.name.lower(),
                "code_bytes": len(binary),
                "characters": len(text),
                "qr_version": qr.qr_version(text),
                "files": [f"{out}.txt", f"{out}.png", f"{out}.svg"],
            }
        )
        return
    console.print(
        f"{term(code.kind.name.lower())} code: {len(binary)} bytes, {len(text)} characters,"
        f" QR version {term(qr.qr_version(text))} (level M) -> {term(out)}.txt/.png/.svg"
    )


def _public_scheme_key(
    trust: Path | None, keys: Path | None, listed: Path | None, now: int, expires_at: int
) -> SchemePublicKey:
    """The scheme public key to seal to, from public files only (never a private key)."""
    if trust is None and keys is not None:
        trust = keys / TRUST_FILE
    if trust is None:
        raise KeyFileError("a merchant-signed code needs --trust (the public trust.json)")
    store, published = load_trust_file(trust)
    if listed is not None:
        try:
            data = read_bounded(listed, what="a scheme key list")
        except OSError as exc:
            raise KeyFileError(f"cannot read {listed}: {exc.strerror}") from None
        return SchemeKeyList.from_bytes(data, store).for_sealing(now, expires_at)
    if not published:
        raise KeyFileError(f"{trust} names no scheme key; give --scheme-keys")
    return published[max(published)]
