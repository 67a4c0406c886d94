"""Choosing an instance's destinations: first matching rule, or every match, else the default.

:class:`RoutingConfig` is the frozen configuration (rules, default, send-to-all);
:class:`Router` applies it. Filters look at the calling AE title and a few top-level elements,
read from the spooled dataset up to the highest tag any filter needs (never the pixel data).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataelem import DataElement
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from common.dicom.part10 import Part10Instance
from common.dicom.scan import encoding_of
from common.errors import MalformedDatasetError, RoutingError
from import_adapter.routing.config import DestinationRule
from import_adapter.routing.destinations import Destination
from import_adapter.routing.filter import InstanceAttributes


@dataclass(frozen=True)
class RoutingConfig:
    """Where instances go.

    Attributes:
        rules: the destination config, in order.
        default: where instances matching no rule go (the ``--dicomweb_address`` store).
        send_to_all: every matching rule gets a copy (else the first match only).
    """

    rules: tuple[DestinationRule, ...] = ()
    default: Destination | None = None
    send_to_all: bool = False


class Router:
    """Applies a :class:`RoutingConfig` to instances."""

    def __init__(self, config: RoutingConfig) -> None:
        self._config = config
        tags: set[int] = set()
        for rule in config.rules:
            tags |= rule.filter.tags
        self._tags = frozenset(tags)

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """Every destination an instance may be sent to (default first), without repeats."""
        found: dict[str, Destination] = {}
        if self._config.default is not None:
            found[self._config.default.key] = self._config.default
        for rule in self._config.rules:
            found.setdefault(rule.destination.key, rule.destination)
        return tuple(found.values())

    @property
    def needed_tags(self) -> frozenset[int]:
        """The element tags the filters read."""
        return self._tags

    def route(self, attributes: InstanceAttributes) -> tuple[Destination, ...]:
        """The destinations of one instance, without repeats.

        Raises:
            RoutingError: no rule matches and there is no default.
        """
        chosen: dict[str, Destination] = {}
        for rule in self._config.rules:
            if rule.filter.matches(attributes):
                chosen.setdefault(rule.destination.key, rule.destination)
                if not self._config.send_to_all:
                    break
        if not chosen and self._config.default is not None:
            chosen[self._config.default.key] = self._config.default
        if not chosen:
            raise RoutingError("instance matches no destination")
        return tuple(chosen.values())

    def attributes(self, instance: Part10Instance, calling_aet: str) -> InstanceAttributes:
        """What the filters need to know about ``instance`` (reads the file if a filter must).

        Raises:
            MalformedDatasetError: the elements cannot be read.
        """
        if not self._tags:
            return InstanceAttributes(calling_aet)
        return InstanceAttributes(calling_aet, read_values(instance, self._tags))


def _strings(element: DataElement) -> tuple[str, ...]:
    value = element.value
    if value is None or value == "":
        return ()
    if isinstance(value, MultiValue | list | tuple):
        return tuple(str(v) for v in value)
    if isinstance(value, bytes):
        return (value.decode("ascii", "replace").rstrip("\x00 "),)
    return (str(value),)


def read_values(instance: Part10Instance, tags: frozenset[int]) -> dict[int, tuple[str, ...]]:
    """The values of top-level elements ``tags`` of a spooled instance, as strings.

    Reading stops after the highest wanted tag, so pixel data is never read.

    Raises:
        MalformedDatasetError: the dataset cannot be parsed up to those tags.
    """
    implicit, little, deflated = encoding_of(instance.transfer_syntax_uid)
    last = max(tags)

    def stop(tag: BaseTag, _vr: str | None, _length: int) -> bool:
        return int(tag) > last

    try:
        with instance.open_dataset() as fp:
            source: BinaryIO = fp
            if deflated:
                source = io.BytesIO(
                    zlib.decompress(fp.read(instance.dataset_length), -zlib.MAX_WBITS)
                )
            ds = read_dataset(source, implicit, little, stop_when=stop)
    except Exception as exc:  # pydicom raises many kinds on bad input
        raise MalformedDatasetError(f"cannot read routing attributes: {exc}") from exc
    values: dict[int, tuple[str, ...]] = {}
    for tag in tags:
        element = ds.get(tag)
        if element is not None:
            values[tag] = _strings(element)
    return values
