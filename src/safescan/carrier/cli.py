"""`safescan carrier ...` commands: run an emulated carrier, inspect one."""

from __future__ import annotations

import typer

from safescan.code.cli_app import new_app
from safescan.code.output import emit_json, fail, say

carrier_app = new_app(help="The key carrier (emulated security token).")


@carrier_app.command("serve")
def serve(
    state: str = typer.Option(..., "--state", help="EEPROM image file (created if absent)."),
    listen: str | None = typer.Option(None, "--listen", help="tcp://HOST:PORT to listen on."),
    serial: str | None = typer.Option(
        None, "--serial", help="Serial device to serve, or 'pty' to create a pseudo-terminal."
    ),
    vpcd: str | None = typer.Option(
        None, "--vpcd", help="tcp://HOST:PORT of a vsmartcard vpcd reader (pcscd) to plug into."
    ),
    audio: str | None = typer.Option(
        None,
        "--audio",
        help="tcp://HOST:PORT[?snr=20&drift_ppm=100&dc=0.05&seed=1] to serve the audio port on "
        "(FSK tones as PCM samples; parameters add a channel model to what the card sends).",
    ),
    institution_key: list[str] | None = typer.Option(  # noqa: B008
        None,
        "--institution-key",
        help="Factory step: KID:HEX of the institution root key a blank carrier will trust "
        "(repeatable). PERSONALIZE then accepts only bundles signed under it.",
    ),
    control: str | None = typer.Option(
        None,
        "--control",
        help="The owner-only control socket (tamper sensor, buttons); default STATE.ctl.",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="plain (no screen) or display (own screen and OK button: signs only what it "
        "showed); fixed at the chip's first power-on.",
    ),
) -> None:
    """Run an emulated key carrier until interrupted (prints 'READY <url>' when listening)."""
    from safescan.carrier.errors import CarrierError
    from safescan.carrier.server import parse_anchor, run
    from safescan.code.errors import KeyFileError

    if model not in (None, "plain", "display"):
        typer.echo("--model is plain or display", err=True)
        raise typer.Exit(2)
    if sum(x is not None for x in (listen, serial, vpcd, audio)) != 1:
        typer.echo("give exactly one of --listen, --serial, --vpcd, --audio", err=True)
        raise typer.Exit(2)
    try:
        anchor = parse_anchor(institution_key or [])
    except KeyFileError as exc:
        say(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    try:
        run(
            state,
            listen=listen,
            serial=serial,
            vpcd=vpcd,
            audio=audio,
            institution_keys=anchor,
            control=control,
            model=model,
        )
    except KeyboardInterrupt:
        return
    except CarrierError as exc:
        say(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        say(f"error: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


@carrier_app.command("info")
def info(
    url: str = typer.Argument(
        ..., help="tcp://HOST:PORT, serial:///DEVICE, pcsc://READER or audio://HOST:PORT"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the carrier."),
) -> None:
    """Show a carrier's public information (serial, lifecycle, counters)."""
    from safescan.carrier.client import CarrierClient
    from safescan.carrier.errors import CarrierBlocked, CarrierError

    try:
        with CarrierClient.connect(url, timeout=timeout) as client:
            doc = client.get_info().to_dict()
    except CarrierBlocked:
        doc = {"lifecycle": "destroyed"}
    except CarrierError as exc:
        raise fail(exc, as_json=as_json, status=1) from None
    if as_json:
        emit_json(doc)
        return
    for key, value in doc.items():
        say(f"{key:28} {value}")


@carrier_app.command("tamper")
def tamper(
    state: str | None = typer.Option(
        None, "--state", help="The carrier process's EEPROM image file (its socket: STATE.ctl)."
    ),
    control: str | None = typer.Option(None, "--control", help="The control socket path."),
    yes: bool = typer.Option(False, "--yes", help="Really destroy the carrier's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fire the tamper sensor: the carrier destroys its keys for good.

    The sensor is physical: no I/O interface (APDU over TCP, serial, PC/SC or audio) reaches
    it. This goes through the carrier process's owner-only control socket instead.
    """
    from safescan.carrier.control import send_control
    from safescan.carrier.errors import CarrierError

    path = _control_path(state, control, as_json=as_json)
    if not yes:
        refusal = CarrierError("this destroys the carrier's keys for ever; add --yes")
        raise fail(refusal, as_json=as_json, status=2)
    try:
        send_control(path, "TAMPER")
    except CarrierError as exc:
        raise fail(exc, as_json=as_json, status=1) from None
    if as_json:
        emit_json({"lifecycle": "destroyed"})
        return
    typer.echo("carrier destroyed")


def _control_path(state: str | None, control: str | None, *, as_json: bool) -> str:
    from safescan.carrier.control import default_control_path
    from safescan.carrier.errors import CarrierError

    if (state is None) == (control is None):
        usage = CarrierError("give --state FILE (or --control PATH) of a running carrier")
        raise fail(usage, as_json=as_json, status=2)
    return str(control if control is not None else default_control_path(str(state)))


@carrier_app.command("screen")
def screen(
    state: str | None = typer.Option(None, "--state", help="The carrier's EEPROM image file."),
    control: str | None = typer.Option(None, "--control", help="The control socket path."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What a display carrier's own screen shows (through its control socket)."""
    import json

    from safescan.carrier.control import send_control
    from safescan.carrier.errors import CarrierError

    path = _control_path(state, control, as_json=as_json)
    try:
        doc = json.loads(send_control(path, "SCREEN"))
    except CarrierError as exc:
        raise fail(exc, as_json=as_json, status=1) from None
    if as_json:
        emit_json(doc)
        return
    for key, value in doc.items():
        say(f"{key:10} {value}")


@carrier_app.command("press")
def press(
    button: str = typer.Argument(..., help="ok or cancel"),
    state: str | None = typer.Option(None, "--state", help="The carrier's EEPROM image file."),
    control: str | None = typer.Option(None, "--control", help="The control socket path."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Press a display carrier's OK or Cancel button (physical: its control socket)."""
    from safescan.carrier.control import send_control
    from safescan.carrier.errors import CarrierError

    path = _control_path(state, control, as_json=as_json)
    if button not in ("ok", "cancel"):
        raise fail(CarrierError("the button is ok or cancel"), as_json=as_json, status=2)
    try:
        answer = send_control(path, f"PRESS {button.upper()}")
    except CarrierError as exc:
        raise fail(exc, as_json=as_json, status=1) from None
    if as_json:
        emit_json({"button": button, "result": answer})
        return
    say(answer)


def _factory_passphrase(passphrase_file: str | None, *, as_json: bool) -> bytes:
    import os

    from safescan.carrier.factory import PASSPHRASE_ENV
    from safescan.code.errors import KeyFileError

    if passphrase_file is not None:
        from pathlib import Path

        from safescan.code.smallfile import LIMIT, read_bounded

        try:  # at most 4 KiB: /dev/zero given by mistake was read until memory ran out
            value = read_bounded(Path(passphrase_file), LIMIT, "a passphrase file")
            value = value.rstrip(b"\r\n")
        except OSError as exc:
            refusal = KeyFileError(f"cannot read the passphrase file: {exc.strerror}")
            raise fail(refusal, as_json=as_json, status=2) from None
    else:
        value = os.environ.get(PASSPHRASE_ENV, "").encode()
    if len(value) < 8:
        refusal = KeyFileError(
            f"a factory key passphrase of at least 8 bytes is required ({PASSPHRASE_ENV}"
            " or --passphrase-file)"
        )
        raise fail(refusal, as_json=as_json, status=2)
    return value


factory_app = new_app(help="The token factory's manufacturer key.")
carrier_app.add_typer(factory_app, name="factory")


@factory_app.command("init")
def factory_init(
    directory: str = typer.Argument(..., help="Where to create the factory key directory."),
    kid: int = typer.Option(1, "--kid", help="The manufacturer key id (0-65535)."),
    passphrase_file: str | None = typer.Option(None, "--passphrase-file"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a manufacturer key; prints KID:HEX for `safescan institution manufacturer add`."""
    from pathlib import Path

    from safescan.carrier.factory import Factory
    from safescan.code.errors import SafescanError

    passphrase = _factory_passphrase(passphrase_file, as_json=as_json)
    try:
        factory = Factory.create(Path(directory), passphrase, kid=kid)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json, status=1) from None
    if as_json:
        emit_json({"kid": factory.kid, "public_key": factory.public_key.hex()})
        return
    say(factory.pin())


@carrier_app.command("manufacture")
def manufacture(
    url: str = typer.Argument(
        ..., help="The blank chip: tcp://HOST:PORT, serial:///DEVICE, pcsc://READER, audio://..."
    ),
    factory_dir: str = typer.Option(..., "--factory", help="The factory key directory."),
    passphrase_file: str | None = typer.Option(None, "--passphrase-file"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The manufacturing step: certify a blank chip's attestation key and fuse the certificate."""
    from pathlib import Path

    from safescan.carrier.factory import Factory
    from safescan.carrier.factory import manufacture as attest
    from safescan.code.errors import SafescanError

    passphrase = _factory_passphrase(passphrase_file, as_json=as_json)
    try:
        factory = Factory.load(Path(factory_dir), passphrase)
        cert = attest(url, factory)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json, status=1) from None
    if as_json:
        emit_json({"subject": cert.subject, "serial": cert.serial, "manufacturer": factory.kid})
        return
    say(f"attested {cert.subject} (certificate {cert.serial}, manufacturer {factory.kid})")
