"""JSON configuration given the reference adapter's three ways: a file, inline, or an env var.

:func:`parse_json` parses any of them with the one error message that says where.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError


@dataclass(frozen=True)
class JsonSource:
    """Where one kind of JSON configuration may come from.

    Attributes:
        what: a name for messages ("AET dictionary").
        path_flag / inline_flag: the two flags' reference spellings.
        env_var: the environment variable read when neither flag is given.
    """

    what: str
    path_flag: str
    inline_flag: str
    env_var: str

    def read(
        self,
        *,
        path: Path | None,
        inline: str | None,
        environ: Mapping[str, str] | None,
    ) -> tuple[str, str] | None:
        """The JSON text and its source's name; None when no source is given.

        The file wins over the inline value, which wins over the environment.

        Raises:
            ConfigError: both flags were given, or the file cannot be read.
        """
        if path is not None and inline is not None:
            raise ConfigError(f"give {self.path_flag} or {self.inline_flag}, not both")
        if path is not None:
            try:
                return path.read_text(encoding="utf-8"), str(path)
            except OSError as exc:
                raise ConfigError(
                    f"cannot read {self.what} {path}: {exc.strerror or exc}"
                ) from exc
        if inline is not None:
            return inline, self.inline_flag
        value = (environ or {}).get(self.env_var)
        if value is not None and value.strip():
            return value, self.env_var
        return None


def parse_json(text: str, source: str) -> Any:
    """The JSON value of a configuration text.

    Args:
        text: the JSON.
        source: where it came from, for the error message (a flag, a file, a variable).

    Raises:
        ConfigError: the text is not valid JSON (the message gives line and column).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
