"""``dicom-adapter dead-letter list|requeue``: inspect and retry instances the uploader gave up on.

Both work on the spool folder (``--persistent_file_storage_location``), with or without the
adapter running: a running adapter picks up re-queued instances within a few seconds
(``rescan_interval``), a stopped one at its next start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from common.cli.options import option
from import_adapter.spool.layout import (
    SIDECAR_SUFFIX,
    SpoolLayout,
    fsync_dir,
    is_entry_name,
    read_json,
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter entry and its sidecar."""

    key: str
    name: str
    record: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What ``list --json`` prints for it."""
        return {"queue": self.key, "file": self.name, **self.record}


def dead_letters(layout: SpoolLayout) -> list[DeadLetter]:
    """Every dead-letter entry, oldest first."""
    found: list[DeadLetter] = []
    if not layout.dead_letter.is_dir():
        return found
    for folder in sorted(layout.dead_letter.iterdir()):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if is_entry_name(path.name):
                record = read_json(folder / (path.name + SIDECAR_SUFFIX))
                found.append(DeadLetter(folder.name, path.name, record or {}))
    return found


def requeue(layout: SpoolLayout, letter: DeadLetter) -> None:
    """Move a dead-letter entry back into its queue and drop its sidecar.

    Raises:
        OSError: the move failed.
    """
    queue = layout.queue(letter.key)
    queue.mkdir(parents=True, exist_ok=True)
    source = layout.dead_letter_folder(letter.key) / letter.name
    os.rename(source, queue / letter.name)
    fsync_dir(queue)
    (source.parent / (letter.name + SIDECAR_SUFFIX)).unlink(missing_ok=True)
    fsync_dir(source.parent)


def _layout(location: Path) -> SpoolLayout:
    if not location.is_dir():
        raise click.BadParameter(
            f"{location} is not a spool folder", param_hint="--persistent_file_storage_location"
        )
    return SpoolLayout(location)


_location = option(
    "persistent_file_storage_location",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The import adapter's spool folder.",
)


@click.group(name="dead-letter", context_settings={"max_content_width": 100})
def command() -> None:
    """Instances the import adapter gave up uploading: list them, or queue them again."""


@command.command(name="list")
@_location
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(persistent_file_storage_location: Path, as_json: bool) -> int:
    """List dead-letter instances with the reason they were given up on."""
    letters = dead_letters(_layout(persistent_file_storage_location))
    for letter in letters:
        if as_json:
            click.echo(json.dumps(letter.summary(), sort_keys=True))
        else:
            record = letter.record
            click.echo(
                f"{letter.key}/{letter.name}  sop_instance={record.get('sop_instance_uid', '?')}"
                f"  attempts={record.get('attempts', '?')}  reason={record.get('reason', '?')}"
            )
    if not as_json:
        click.echo(f"{len(letters)} dead-letter instance(s)", err=True)
    return 0


@command.command(name="requeue")
@_location
@click.option("--all", "everything", is_flag=True, help="Re-queue every dead-letter instance.")
@click.option("--queue", "queue_key", help="Only instances of this queue (destination key).")
@click.argument("files", nargs=-1)
def requeue_command(
    persistent_file_storage_location: Path,
    everything: bool,
    queue_key: str | None,
    files: tuple[str, ...],
) -> int:
    """Put dead-letter instances (FILES as listed, or --all) back in their upload queue."""
    if not everything and not files:
        raise click.UsageError("name the files to re-queue, or give --all")
    layout = _layout(persistent_file_storage_location)
    wanted = {name.rsplit("/", 1)[-1] for name in files}
    letters = [
        letter
        for letter in dead_letters(layout)
        if (everything or letter.name in wanted)
        and (queue_key is None or letter.key == queue_key)
    ]
    unknown = wanted - {letter.name for letter in letters}
    if unknown:
        raise click.BadParameter(
            f"not in dead-letter: {', '.join(sorted(unknown))}", param_hint="FILES"
        )
    for letter in letters:
        requeue(layout, letter)
        click.echo(f"re-queued {letter.key}/{letter.name}")
    click.echo(f"{len(letters)} instance(s) re-queued", err=True)
    return 0
