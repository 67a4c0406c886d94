"""The ``dicom-adapter`` command group.

Subcommands are loaded lazily by import path, so ``common`` does not depend on the services and
``dicom-adapter import`` does not import the export adapter's Pub/Sub stack. Every usage mistake
is reported as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from common.errors import ConfigError

#: Subcommand name -> "module:attribute" of its click command.
SUBCOMMANDS = {
    "import": "import_adapter.cli:command",
    "export": "export_adapter.cli:command",
    "dead-letter": "import_adapter.spool.cli:command",
    "spool": "import_adapter.spool.drain_cli:command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Subcommands whose modules are installed."""
        return sorted(
            name
            for name, target in SUBCOMMANDS.items()
            if importlib.util.find_spec(target.split(".")[0]) is not None
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return a subcommand."""
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise click.UsageError(f"'{cmd_name}' is not available in this build") from exc
            raise
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse the group's own options.

        A subcommand's option given without the subcommand (as the reference adapter's images
        take their flags) is answered with the subcommand it belongs to.
        """
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            owners = self._subcommands_with_option(ctx, exc.option_name)
            if not owners:
                raise
            names = " or ".join(f"'{ctx.info_name} {name}'" for name in owners)
            targets = " or ".join(f"--target {name}" for name in owners)
            raise click.NoSuchOption(
                exc.option_name,
                message=f"No such option: {exc.option_name} is an option of {names}: give the "
                f"subcommand first, or run the image built with {targets}, which takes the "
                "flags alone",
                ctx=ctx,
            ) from exc

    def _subcommands_with_option(self, ctx: click.Context, option_name: str) -> list[str]:
        """The subcommands (import, export, ...) that have the option ``option_name``."""
        owners = []
        for name in self.list_commands(ctx):
            try:
                command = self.get_command(ctx, name)
            except (click.UsageError, ImportError):
                continue
            if command is not None and any(
                option_name in (*param.opts, *param.secondary_opts) for param in command.params
            ):
                owners.append(name)
        return owners


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="dicom-adapter", prog_name="dicom-adapter")
def cli() -> None:
    """Connect DIMSE (PACS, modalities) to DICOMweb stores such as the Cloud Healthcare API."""


def run(command: click.Command, args: list[str] | None = None, prog_name: str = "") -> int:
    """Run a click command, turning usage and configuration errors into one-line messages."""
    name = prog_name or "dicom-adapter"
    try:
        result: Any = command.main(args=args, prog_name=name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return 2
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else name
        click.echo(f"{where}: error: {exc.format_message()} (see --help)", err=True)
        return 2
    except ConfigError as exc:
        click.echo(f"{name}: error: {exc}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"{name}: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point of ``dicom-adapter``."""
    sys.exit(run(cli))
