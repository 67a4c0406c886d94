"""Receiving a C-STORE's dataset: into memory when small, else into a file as it arrives.

The Part 10 file meta is built from the command set and the negotiated transfer syntax; the
dataset bytes follow exactly as sent. Up to :data:`~common.dicom.part10.IN_MEMORY_LIMIT` the
file stays in memory (no disk I/O for the common small instance); beyond it, it streams to a
private file in the receive directory. A dataset over the instance size limit is read and
dropped (the C-STORE is then refused with a status); one past twice the limit ends the
association. A file is never left behind by a failed or refused receive.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import tempfile
from pathlib import Path
from typing import BinaryIO

from common.dicom.part10 import IN_MEMORY_LIMIT, build_file_meta
from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CStoreRq
from common.dimse.fast.constants import AbortReason
from common.dimse.fast.transport import DimseProtocolError, PduStream
from common.errors import MalformedDatasetError

#: Buffer of the spool file writer: fragments are small, system calls are not free.
_SPOOL_BUFFER = 1 << 20
#: Spool file names: unique to this process, then a counter (see :func:`_new_file_name`).
_SPOOL_PREFIX = f"rx-{os.getpid():x}-{secrets.token_hex(4)}-"
_SPOOL_COUNTER = itertools.count()


def _new_file_name(directory: str) -> str:
    """A new spool file name in ``directory``: a per-process prefix and a counter.

    What :func:`tempfile.mkstemp` does for names, without drawing a random name for every file
    (which checks the process id and costs more than receiving a small dataset); ``next`` on
    :func:`itertools.count` is atomic under the GIL. Names are unique within the process, and
    :func:`_create_file` still makes sure the file is new.
    """
    return os.path.join(directory, f"{_SPOOL_PREFIX}{next(_SPOOL_COUNTER)}.dcm")


def _create_file(path: Path) -> BinaryIO:
    """Create the private spool file ``path`` (it must be new) for buffered writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb", buffering=_SPOOL_BUFFER)


def remove_quietly(path: Path) -> None:
    """Remove a received file if it is still there."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def receive_dataset(
    stream: PduStream,
    context: AcceptedContext,
    request: CStoreRq,
    directory: Path | None,
    limit: int,
) -> tuple[Path, bytes | None] | None:
    """Receive a C-STORE's dataset as a Part 10 file (meta from the command, dataset as sent).

    Args:
        stream: the association's stream, the command just read.
        context: the C-STORE's presentation context.
        request: the C-STORE-RQ.
        directory: where a file is written (None: the system's temporary directory).
        limit: the instance size limit in bytes (0: none).

    Returns:
        The file's path and, when the file is at most
        :data:`~common.dicom.part10.IN_MEMORY_LIMIT` bytes, its content. A small file is kept
        in memory only: the path only names where it would be, and no file exists. A larger
        one is written as it arrives, and the content is None. None (and no file kept) when
        the dataset exceeded the limit: what came past it was read and dropped.

    Raises:
        DimseProtocolError: the dataset went on past twice the limit (the association must be
            aborted); no file is kept. Whatever the stream raises leaves no file either.
    """
    path = Path(_new_file_name(str(directory or tempfile.gettempdir())))
    received = 0
    # The file's content while it is small; once it outgrows memory, the file is created
    # and everything goes there.
    head = bytearray()
    kept: bytearray | None = head
    spill: BinaryIO | None = None
    try:
        # An unusable UID: no meta, so the store check refuses the instance with a status
        # instead of the association failing.
        with contextlib.suppress(MalformedDatasetError):
            head += build_file_meta(
                sop_class_uid=request.sop_class_uid,
                sop_instance_uid=request.sop_instance_uid,
                transfer_syntax_uid=context.transfer_syntax,
            )

        def write(data: memoryview) -> None:
            nonlocal received, kept, spill
            received += len(data)
            if limit and received > limit:
                if received > 2 * limit:
                    raise DimseProtocolError(
                        "dataset far beyond the instance size limit",
                        AbortReason.NOT_SPECIFIED,
                    )
                return  # read and dropped: the C-STORE gets 0xA700
            if kept is not None:
                if len(kept) + len(data) <= IN_MEMORY_LIMIT:
                    kept += data
                    return
                spill = _create_file(path)
                spill.write(kept)  # too big to keep: from now on, straight to the file
                kept = None
            assert spill is not None
            spill.write(data)

        stream.read_dataset(context.context_id, write)
        if spill is not None:
            spill.close()
    except BaseException:
        if spill is not None:
            spill.close()
            remove_quietly(path)
        raise
    if limit and received > limit:
        if spill is not None:
            remove_quietly(path)
        return None
    return path, None if kept is None else bytes(kept)
