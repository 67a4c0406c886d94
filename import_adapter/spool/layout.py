"""Spool folders, entry names and the fsync helpers of the commit protocol.

An entry name is ``{time_ns:016x}{counter:08x}{random:6}_{calling AE title as hex}.dcm``: it
sorts in arrival order (so a restart serves the oldest first), never collides (two instances
with the same SOP Instance UID are two entries), and carries the calling AE title, which goes
into the file meta (Source Application Entity Title) of what is uploaded.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

INCOMING = "incoming"
STAGING = "staging"
QUEUES = "queues"
DEAD_LETTER = "dead-letter"
#: The file in each queue folder describing its destination.
DESCRIPTOR = "destination.json"
#: The file a process serving the spool holds an exclusive lock on.
LOCK = "spool.lock"
ENTRY_SUFFIX = ".dcm"
SIDECAR_SUFFIX = ".json"
_TMP_SUFFIX = ".tmp"

_counter = itertools.count()
_counter_lock = threading.Lock()


def new_entry_name(calling_aet: str) -> str:
    """A unique entry name that sorts in arrival order and records the calling AE title."""
    with _counter_lock:
        count = next(_counter) & 0xFFFFFFFF
    aet = calling_aet.strip().encode("ascii", "replace").hex()
    return f"{time.time_ns():016x}{count:08x}{secrets.token_hex(3)}_{aet}{ENTRY_SUFFIX}"


def is_entry_name(name: str) -> bool:
    """Whether a file name is a spool entry (not a descriptor, sidecar or temporary file)."""
    return name.endswith(ENTRY_SUFFIX) and "_" in name


def entry_age(name: str) -> float:
    """Seconds since an entry was received, from its name (0 if unreadable)."""
    try:
        return max(0.0, (time.time_ns() - int(name[:16], 16)) / 1e9)
    except ValueError:
        return 0.0


def entry_calling_aet(name: str) -> str:
    """The calling AE title recorded in an entry name ('' if none or unreadable)."""
    try:
        raw = name.removesuffix(ENTRY_SUFFIX).split("_", 1)[1]
        return bytes.fromhex(raw).decode("ascii", "replace")
    except (IndexError, ValueError):
        return ""


class SpoolLayout:
    """The folders of one spool."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / INCOMING
        self.staging = root / STAGING
        self.queues = root / QUEUES
        self.dead_letter = root / DEAD_LETTER
        self.lock_file = root / LOCK

    def __repr__(self) -> str:
        return f"SpoolLayout({self.root})"

    def create(self) -> None:
        """Create the folders that do not exist yet."""
        for folder in (self.incoming, self.staging, self.queues, self.dead_letter):
            folder.mkdir(parents=True, exist_ok=True)

    def queue(self, key: str) -> Path:
        """The queue folder of a destination."""
        return self.queues / key

    def dead_letter_folder(self, key: str) -> Path:
        """The dead-letter folder of a destination."""
        return self.dead_letter / key


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, links, unlinks in it) to stable storage."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to ``path``, fsync it, and rename it into place."""
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    with tmp.open("w", encoding="utf-8") as fp:
        json.dump(data, fp, indent=2, sort_keys=True)
        fp.write("\n")
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    """Read a JSON file (None if it is missing or unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
