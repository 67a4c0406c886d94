"""The AET dictionary: where C-MOVE destinations live, in the reference adapter's format.

The dictionary is a JSON array of ``{"name": AE title, "host": ..., "port": ...}`` objects::

    [{"name": "WORKSTATION", "host": "10.0.0.7", "port": 104}]

It comes from exactly one of ``--aet_dictionary`` (a file), ``--aet_dictionary_inline`` (the
JSON itself) or the environment variable ``ENV_AETS_JSON`` (as the reference adapter reads it);
with none of them the dictionary is empty and every C-MOVE destination is unknown. Errors name
the source and the entry (index and AE title) that is wrong.

An entry may ask for DICOM TLS to that peer (C-MOVE sub-associations, Storage Commitment
reports): ``{"name": ..., "host": ..., "port": ..., "tls": true, "ca": "/path/ca.pem"}``, with
optional ``cert``/``key`` (a client certificate) and ``verify_hostname`` (default true); see
:func:`common.dimse.tls.tls_from_entry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from common.config_source import JsonSource, parse_json
from common.dimse.ae_title import validate_ae_title
from common.dimse.sender import PeerAddress
from common.dimse.tls import TLS_ENTRY_KEYS, tls_from_entry
from common.errors import ConfigError

#: The environment variable the reference adapter reads the dictionary from.
ENV_AETS_JSON = "ENV_AETS_JSON"
_KEYS = frozenset({"name", "host", "port"})
AET_DICTIONARY_SOURCE = JsonSource(
    "AET dictionary", "--aet_dictionary", "--aet_dictionary_inline", ENV_AETS_JSON
)


class AetDictionary:
    """Known DIMSE peers by AE title (immutable)."""

    def __init__(self, peers: Iterable[PeerAddress] = ()) -> None:
        self._peers: dict[str, PeerAddress] = {}
        for peer in peers:
            if peer.ae_title in self._peers:
                raise ConfigError(f"AE title {peer.ae_title!r} appears twice")
            self._peers[peer.ae_title] = peer

    def lookup(self, ae_title: str) -> PeerAddress | None:
        """The peer with this AE title (surrounding spaces ignored), or None if unknown."""
        return self._peers.get(ae_title.strip(" "))

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[PeerAddress]:
        return iter(self._peers.values())

    def __repr__(self) -> str:
        return f"AetDictionary({', '.join(str(p) for p in self)})"


def _entry(index: int, item: Any, source: str) -> PeerAddress:
    where = f"{source}: entry {index}"
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        where = f"{where} ({item['name']!r})"
    return peer_from_entry(item, where)


def peer_from_entry(item: Any, where: str) -> PeerAddress:
    """A peer from a reference-format ``{"name", "host", "port"}`` object (plus TLS keys).

    Shared by the AET dictionary and DIMSE routing destinations.

    Raises:
        ConfigError: a key is missing or invalid; the message starts with ``where``.
    """
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is not an object with name, host and port")
    name = item.get("name")
    missing = sorted(_KEYS - item.keys())
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(item) - _KEYS - TLS_ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: name must be a string (an AE title)")
    try:
        title = validate_ae_title(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    host = item["host"]
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"{where}: host must be a non-empty string")
    port = item["port"]
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: port must be an integer from 1 to 65535, not {port!r}")
    return PeerAddress(
        ae_title=title, host=host.strip(), port=port, tls=tls_from_entry(item, where)
    )


def parse_aet_dictionary(text: str, *, source: str) -> AetDictionary:
    """Parse and validate the JSON form of the dictionary.

    Args:
        text: the JSON array.
        source: where it came from, for error messages (a flag, a file, a variable).

    Raises:
        ConfigError: the JSON is malformed or an entry is invalid; the message names the entry.
    """
    data = parse_json(text, source)
    if not isinstance(data, list):
        raise ConfigError(
            f'{source} must be a JSON array like [{{"name": "AET", "host": "h", "port": 104}}]'
        )
    peers = [_entry(index, item, source) for index, item in enumerate(data)]
    seen: dict[str, int] = {}
    for index, peer in enumerate(peers):
        if peer.ae_title in seen:
            raise ConfigError(
                f"{source}: entry {index} ({peer.ae_title!r}) repeats the AE title of "
                f"entry {seen[peer.ae_title]}"
            )
        seen[peer.ae_title] = index
    return AetDictionary(peers)


def load_aet_dictionary(
    *,
    path: Path | None = None,
    inline: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> AetDictionary:
    """The dictionary from a file, inline JSON, or ``ENV_AETS_JSON`` (in that order).

    Raises:
        ConfigError: both a file and inline JSON were given, the file cannot be read, or the
            JSON is invalid.
    """
    found = AET_DICTIONARY_SOURCE.read(path=path, inline=inline, environ=environ)
    if found is None:
        return AetDictionary()
    text, source = found
    return parse_aet_dictionary(text, source=source)
