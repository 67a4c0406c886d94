"""Destination filters in the reference adapter's format: ``Modality=MG&AETitle=CT1``.

A filter is ``&``-separated ``KEY=VALUE`` conditions, all of which must hold. A key is a DICOM
keyword (``Modality``) or a tag as 8 hex digits (``00080060``); ``AETitle`` is the calling AE
title of the association. Values match with DICOM wildcards (PS3.4 C.2.2.2.4): ``*`` any run of
characters, ``?`` one character; otherwise exactly (case-sensitive). A multi-valued attribute
matches when one of its values does. An empty filter matches every instance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword

from common.errors import ConfigError

#: The pseudo-key for the calling AE title.
AE_TITLE_KEY = "AETitle"
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class InstanceAttributes:
    """What a filter can look at: the calling AE title and some top-level element values.

    Attributes:
        calling_aet: the association's calling AE title.
        values: tag -> the element's values as strings (absent tags are missing).
    """

    calling_aet: str
    values: Mapping[int, tuple[str, ...]] = field(default_factory=dict)


def wildcard_pattern(value: str) -> re.Pattern[str]:
    """A compiled regular expression for a DICOM wildcard value (``*`` and ``?``)."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value]
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True)
class Condition:
    """One ``KEY=VALUE`` condition.

    Attributes:
        key: the key as written (keyword, hex tag or ``AETitle``).
        tag: the element tag, or None for ``AETitle``.
        value: the value, possibly with wildcards.
    """

    key: str
    tag: int | None
    value: str

    def matches(self, attributes: InstanceAttributes) -> bool:
        """Whether the instance satisfies this condition."""
        pattern = wildcard_pattern(self.value)
        if self.tag is None:
            return pattern.fullmatch(attributes.calling_aet.strip()) is not None
        values = attributes.values.get(self.tag)
        if values is None:
            return False
        candidates = values or ("",)
        return any(pattern.fullmatch(v) is not None for v in candidates)


@dataclass(frozen=True)
class InstanceFilter:
    """A parsed filter: every condition must hold."""

    text: str
    conditions: tuple[Condition, ...] = ()

    @property
    def tags(self) -> frozenset[int]:
        """The element tags the filter reads."""
        return frozenset(c.tag for c in self.conditions if c.tag is not None)

    def matches(self, attributes: InstanceAttributes) -> bool:
        """Whether the instance satisfies every condition."""
        return all(c.matches(attributes) for c in self.conditions)


def _tag_of(key: str) -> int:
    if _HEX_TAG.match(key):
        tag = int(key, 16)
    else:
        found = tag_for_keyword(key)
        if found is None:
            raise ConfigError(f"unknown attribute {key!r} (use a DICOM keyword or 8 hex digits)")
        tag = int(found)
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = ""  # private or unknown tags are compared as text
    if vr == "SQ":
        raise ConfigError(f"{key!r} is a sequence; filters compare single values only")
    if tag >> 16 in (0x0000, 0x0002):
        raise ConfigError(f"{key!r} is not a dataset attribute")
    return tag


def parse_filter(text: str) -> InstanceFilter:
    """Parse ``KEY=VALUE&KEY=VALUE``.

    Raises:
        ConfigError: a condition has no ``=``, an empty key, or an unknown attribute.
    """
    conditions: list[Condition] = []
    for raw in text.split("&"):
        part = raw.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"filter condition {part!r} is not KEY=VALUE")
        if key == AE_TITLE_KEY:
            conditions.append(Condition(key, None, value.strip()))
        else:
            conditions.append(Condition(key, _tag_of(key), value))
    return InstanceFilter(text, tuple(conditions))
