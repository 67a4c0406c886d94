"""The destination config (reference adapter format), validated at start-up.

A JSON array of rules, each a filter and one destination::

    [{"filter": "Modality=MG&AETitle=CT1", "dicomweb_destination": "https://.../dicomWeb"},
     {"filter": "Modality=CT", "dicom_destination": {"name": "PACS", "host": "10.0.0.9",
                                                     "port": 104}}]

It comes from exactly one of ``--destination_config_path`` (a file),
``--destination_config_inline`` (the JSON) or the environment variable
``ENV_DESTINATION_CONFIG_JSON``. Every error names its source and the entry (index and filter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config_source import JsonSource, parse_json
from common.errors import ConfigError
from import_adapter.routing.destinations import (
    Destination,
    dicomweb_destination,
    dimse_destination,
)
from import_adapter.routing.filter import InstanceFilter, parse_filter

#: The environment variable the reference adapter reads the config from.
ENV_DESTINATION_CONFIG_JSON = "ENV_DESTINATION_CONFIG_JSON"
DESTINATION_CONFIG_SOURCE = JsonSource(
    "destination config",
    "--destination_config_path",
    "--destination_config_inline",
    ENV_DESTINATION_CONFIG_JSON,
)
_KEYS = frozenset({"filter", "dicomweb_destination", "dicom_destination"})


@dataclass(frozen=True)
class DestinationRule:
    """One entry of the config: instances matching ``filter`` go to ``destination``."""

    index: int
    filter: InstanceFilter
    destination: Destination


def _rule(index: int, item: Any, source: str) -> DestinationRule:
    where = f"{source}: entry {index}"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is not an object with filter and a destination")
    text = item.get("filter")
    if isinstance(text, str):
        where = f"{where} (filter {text!r})"
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}")
    if not isinstance(text, str):
        raise ConfigError(f"{where}: filter must be a string like \"Modality=MG\"")
    try:
        parsed = parse_filter(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    has_web, has_dimse = "dicomweb_destination" in item, "dicom_destination" in item
    if has_web == has_dimse:
        raise ConfigError(f"{where} needs exactly one of dicomweb_destination, dicom_destination")
    destination: Destination = (
        dicomweb_destination(item["dicomweb_destination"], where)
        if has_web
        else dimse_destination(item["dicom_destination"], where)
    )
    return DestinationRule(index, parsed, destination)


def parse_destination_config(text: str, *, source: str) -> tuple[DestinationRule, ...]:
    """Parse and validate the JSON config.

    Raises:
        ConfigError: malformed JSON or an invalid entry; the message names the entry.
    """
    data = parse_json(text, source)
    if not isinstance(data, list):
        raise ConfigError(
            f'{source} must be a JSON array like [{{"filter": "Modality=CT", '
            f'"dicomweb_destination": "https://..."}}]'
        )
    return tuple(_rule(index, item, source) for index, item in enumerate(data))


def load_destination_config(
    *,
    path: Path | None = None,
    inline: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[DestinationRule, ...]:
    """The rules from a file, inline JSON or ``ENV_DESTINATION_CONFIG_JSON`` (none: no rules).

    Raises:
        ConfigError: both a file and inline JSON were given, the file cannot be read, or the
            config is invalid.
    """
    found = DESTINATION_CONFIG_SOURCE.read(path=path, inline=inline, environ=environ)
    if found is None:
        return ()
    text, source = found
    return parse_destination_config(text, source=source)
