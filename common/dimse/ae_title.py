"""Application Entity titles (PS3.5 6.2, VR AE)."""

from __future__ import annotations

from common.errors import ConfigError

MAX_AE_TITLE = 16


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
