"""`safescan carrier ...` commands: run an emulated carrier, inspect one."""

from __future__ import annotations

import typer

from safescan.code.output import emit_json, fail

carrier_app = typer.Typer(help="The key carrier (emulated security token).", no_args_is_help=True)


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
) -> None:
    """Run an emulated key carrier until interrupted (prints 'READY <url>' when listening)."""
    from safescan.carrier.errors import CarrierError
    from safescan.carrier.server import parse_anchor, run
    from safescan.code.errors import KeyFileError

    if sum(x is not None for x in (listen, serial, vpcd, audio)) != 1:
        typer.echo("give exactly one of --listen, --serial, --vpcd, --audio", err=True)
        raise typer.Exit(2)
    try:
        anchor = parse_anchor(institution_key or [])
    except KeyFileError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    try:
        run(
            state,
            listen=listen,
            serial=serial,
            vpcd=vpcd,
            audio=audio,
            institution_keys=anchor,
        )
    except KeyboardInterrupt:
        return
    except CarrierError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"error: {exc.strerror or exc}", err=True)
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
        typer.echo(f"{key:28} {value}")


@carrier_app.command("tamper")
def tamper(
    url: str = typer.Argument(
        ..., help="tcp://HOST:PORT, serial:///DEVICE, pcsc://READER or audio://HOST:PORT"
    ),
    yes: bool = typer.Option(False, "--yes", help="Really destroy the carrier's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fire the tamper sensor: the carrier destroys its keys for good."""
    from safescan.carrier.client import CarrierClient
    from safescan.carrier.errors import CarrierError

    if not yes:
        refusal = CarrierError("this destroys the carrier's keys for ever; add --yes")
        raise fail(refusal, as_json=as_json, status=2)
    try:
        with CarrierClient.connect(url) as client:
            client.tamper()
    except CarrierError as exc:
        raise fail(exc, as_json=as_json, status=1) from None
    if as_json:
        emit_json({"lifecycle": "destroyed"})
        return
    typer.echo("carrier destroyed")
