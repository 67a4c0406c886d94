"""Application Entity titles (PS3.5 6.2, VR AE): from configuration and from the wire."""

from __future__ import annotations

from common.errors import ConfigError

MAX_AE_TITLE = 16
#: Bytes some requestors pad the 16-byte AE title fields of an A-ASSOCIATE-RQ with (PS3.8 9.3.2
#: says spaces; pynetdicom2 pads with NULs, and DCMTK and Orthanc accept that).
_PADDING = b" \0"


def validate_ae_title(value: str) -> str:
    """Return the AE title without surrounding spaces, or raise :class:`ConfigError`.

    An AE title is 1 to 16 characters of the default repertoire, without backslash or control
    characters, and not only spaces.
    """
    title = value.strip(" ")
    if not title:
        raise ConfigError("an AE title cannot be empty")
    if len(title) > MAX_AE_TITLE:
        raise ConfigError(f"AE title {title!r} is longer than {MAX_AE_TITLE} characters")
    bad = [c for c in title if c == "\\" or not (32 <= ord(c) < 127)]
    if bad:
        raise ConfigError(f"AE title {title!r} contains a forbidden character {bad[0]!r}")
    return title


def space_padded(field: bytes) -> bytes:
    """An AE title field with its trailing padding, spaces or NUL bytes, made of spaces.

    Only trailing padding: a NUL inside the title is left for :func:`ae_title_from_field` to
    refuse.
    """
    title = field.rstrip(_PADDING)
    return title + b" " * (len(field) - len(title))


def ae_title_from_field(field: bytes) -> str | None:
    """The AE title a (space- or NUL-padded) A-ASSOCIATE field spells, or None if it is none.

    Leading and trailing spaces are not significant (PS3.5 table 6.2-1); what remains must be
    1 to 16 characters of the default repertoire without backslash or control characters.
    """
    title = space_padded(field).strip(b" ")
    if not title or len(title) > MAX_AE_TITLE:
        return None
    if any(byte == 0x5C or not 0x20 <= byte < 0x7F for byte in title):
        return None
    return title.decode("ascii")
