"""`dutylink keys`: the key ring that seals personal data at rest (gateway.core.sealing).

The ring is the file `personal_data.key_file` names (by default under the data directory), the
same on every replica. Each command names its file and prints key ids only, never a key. A
running gateway reads the file again every `personal_data.reload_seconds` and audits the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from gateway import config as config_module
from gateway.core.crypto import CryptoProfile, crypto_profile
from gateway.core.sealing import Keyring, SealingError
from gateway.core.settings import ConfigError
from gateway.store.sealing_keys import (
    default_key_file,
    fresh_keyring,
    read_key_file,
    rotated,
    write_key_file,
)

keys_app = typer.Typer(
    help="Manage the key ring that seals personal data at rest.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="The gateway's configuration file.", dir_okay=False),
]
FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file", help="The key ring file (default: the configuration's).", dir_okay=False
    ),
]


@contextmanager
def _reported() -> Iterator[None]:
    """A bad ring or configuration: one line on stderr and exit status 1, never a traceback."""
    try:
        yield
    except (SealingError, ConfigError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _ring_file(config: Path | None, file: Path | None) -> tuple[Path, CryptoProfile]:
    """The ring's file and the deployment's crypto profile, as the gateway resolves them."""
    loaded = config_module.load(config)
    settings = loaded.personal_data
    if settings.key_command:
        raise ConfigError(
            "personal_data.key_command: the key ring comes from a key service; rotate it there"
        )
    path = file or (
        Path(settings.key_file) if settings.key_file else default_key_file(loaded.nats.data_dir)
    )
    return path, crypto_profile(loaded.audit.crypto_profile)


def _describe(path: Path, keyring: Keyring) -> None:
    typer.echo(f"{path}: {keyring.profile.aead.name} ({keyring.profile.name} profile)")
    for identifier in sorted(keyring.keys):
        role = "seals new events" if identifier == keyring.current else "opens only"
        typer.echo(f"  {identifier}  created {keyring.created.get(identifier) or '?'}  {role}")


@keys_app.command()
def init(config: ConfigOption = None, file: FileOption = None) -> None:
    """Create the key ring with a first key (0600; refused if the file exists)."""
    with _reported():
        path, profile = _ring_file(config, file)
        if path.exists():
            raise SealingError(f"{path} exists already: use rotate to add a key")
        keyring = fresh_keyring(profile)
        write_key_file(path, keyring)
    _describe(path, keyring)
    typer.echo("Give every replica this same file (it never leaves the gateways' hosts).")


@keys_app.command()
def show(config: ConfigOption = None, file: FileOption = None) -> None:
    """List the ring's keys by id: when each was made and which one seals new events."""
    with _reported():
        path, profile = _ring_file(config, file)
        keyring = read_key_file(path, profile)
    _describe(path, keyring)


@keys_app.command()
def rotate(config: ConfigOption = None, file: FileOption = None) -> None:
    """Add a fresh key and seal new events with it; the old keys still open what they sealed."""
    with _reported():
        path, profile = _ring_file(config, file)
        keyring = rotated(read_key_file(path, profile))
        write_key_file(path, keyring)
    _describe(path, keyring)
    typer.echo(
        "Running gateways take it within personal_data.reload_seconds (each audits it); copy "
        "the file first to replicas that do not share it, or they cannot open the new events."
    )


@keys_app.command()
def retire(
    key: Annotated[str, typer.Argument(help="The id of the key to remove (8 hex digits).")],
    config: ConfigOption = None,
    file: FileOption = None,
) -> None:
    """Remove an old key. Events it sealed can no longer be opened: retire a key only once the
    events stream's max age has passed since the rotation that replaced it."""
    with _reported():
        path, profile = _ring_file(config, file)
        keyring = read_key_file(path, profile).retired(key)
        write_key_file(path, keyring)
    _describe(path, keyring)
