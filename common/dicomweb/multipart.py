"""multipart/related bodies (RFC 2387) for STOW-RS requests and WADO-RS responses, streamed.

Building: :class:`MultipartBody` is a readable file object over [part head, file bytes, ...,
tail] with a known length, so a request (one instance, or a batch) streams from disk with a
Content-Length and constant memory (by ``sendfile`` where the connection allows:
:meth:`MultipartBody.segments`).

Parsing: :func:`iter_parts` consumes an iterator of byte chunks and yields one :class:`Part` at a
time; each part's body is itself an iterator that must be consumed (or ``drain``ed) before the
next part. Memory is bounded by the chunk size plus the boundary length.
"""

from __future__ import annotations

import io
import itertools
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message

from common.dicom.part10 import Part10Instance
from common.errors import DicomwebError, DicomwebResponseError
from common.http import FileRange

#: Instances up to this size are sent from memory (one write), larger ones streamed from disk.
INLINE_LIMIT = 1 << 20


#: 96 random bits per process; :func:`new_boundary` adds a counter. Drawing 128 fresh random
#: bits for every request cost a system call per STOW-RS for no gain in uniqueness.
_BOUNDARY_PREFIX = f"dicomadapter-{secrets.token_hex(12)}-"
_BOUNDARY_COUNTER = itertools.count()


def new_boundary() -> str:
    """A boundary that cannot occur by chance in the body, and differs for every request."""
    return f"{_BOUNDARY_PREFIX}{next(_BOUNDARY_COUNTER):x}"


class MultipartBody(io.RawIOBase):
    """A ``multipart/related; type="application/dicom"`` body over Part 10 instances.

    One part per instance, in order: a batched STOW-RS sends several in one request. Readable
    once; create a new one for each attempt of a request.
    """

    def __init__(self, instances: Sequence[Part10Instance], boundary: str) -> None:
        super().__init__()
        if not instances:
            raise ValueError("a STOW-RS body needs at least one instance")
        opener = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
        # [part head, dataset, part head, dataset, ..., tail]: a part head after the first
        # starts with the CRLF that ends the previous part's body (RFC 2046 5.1.1).
        self._pieces: list[bytes | Part10Instance] = []
        for index, instance in enumerate(instances):
            self._pieces.append((b"\r\n" if index else b"") + opener + instance.meta)
            self._pieces.append(instance)
        self._pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
        self._length = sum(
            len(piece) if isinstance(piece, bytes) else piece.dataset_length
            for piece in self._pieces
        )
        self._next = 0
        self._buffer = memoryview(b"")
        self._file: io.BytesIO | io.BufferedReader | None = None
        self._file_left = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill ``target`` from the pieces in order: part heads, datasets, the tail."""
        view = memoryview(target)
        while True:
            if self._file is not None:
                want = min(len(view), self._file_left)
                count = self._file.readinto(view[:want]) if want else 0
                if count:
                    self._file_left -= count
                    return count
                if self._file_left:
                    # Not the server's answer: our file, as the sendfile path reports it too.
                    raise DicomwebError(
                        f"the file behind the request body ended {self._file_left} bytes early "
                        "while it was sent"
                    )
                self._file.close()
                self._file = None
            count = min(len(view), len(self._buffer))
            if count:
                view[:count] = self._buffer[:count]
                self._buffer = self._buffer[count:]
                return count
            if self._next >= len(self._pieces):
                return 0
            piece = self._pieces[self._next]
            self._next += 1
            if isinstance(piece, bytes):
                self._buffer = memoryview(piece)
            else:
                self._file = piece.open_dataset()
                self._file_left = piece.dataset_length

    def segments(self) -> Iterator[bytes | FileRange]:
        """The body as part heads, datasets (ranges of spool files, or bytes) and the tail.

        For :class:`common.http.SegmentedBody`: the transport hands the ranges to ``sendfile``.
        Use either this or ``read``, once.
        """
        for piece in self._pieces:
            if isinstance(piece, bytes):
                yield piece
            elif piece.loaded is not None:
                yield piece.loaded
            else:
                with piece.dataset_path.open("rb") as file:
                    yield FileRange(file, piece.dataset_offset, piece.dataset_length)

    def inline(self) -> bytes:
        """The whole body in one buffer (for small bodies: one write)."""
        return b"".join(
            piece if isinstance(piece, bytes) else piece.read_dataset_bytes()
            for piece in self._pieces
        )

    def close(self) -> None:
        """Close the dataset file if it is open."""
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def stow_body(instances: Sequence[Part10Instance]) -> tuple[bytes | MultipartBody, str]:
    """A STOW-RS request body for one or more instances, and its Content-Type header value.

    Small bodies are read into one buffer (one syscall, one send); large ones stream.
    """
    boundary = new_boundary()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    body = MultipartBody(instances, boundary)
    if len(body) <= INLINE_LIMIT:
        return body.inline(), content_type
    return body, content_type


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type header."""
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_maintype() != "multipart":
        raise DicomwebResponseError(f"expected a multipart response, got {content_type!r}")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise DicomwebResponseError("multipart response without a boundary")
    return boundary


@dataclass
class Part:
    """One body part: its headers (lower-case names) and its body as a chunk iterator."""

    headers: dict[str, str]
    body: Iterator[bytes] = field(repr=False)

    @property
    def content_type(self) -> str:
        """The part's Content-Type ('' when absent)."""
        return self.headers.get("content-type", "")

    def drain(self) -> None:
        """Skip the rest of the body."""
        for _ in self.body:
            pass

    def write_to(self, path: str | os.PathLike[str]) -> int:
        """Write the body to a file and return its size."""
        size = 0
        with open(path, "wb") as out:
            for chunk in self.body:
                out.write(chunk)
                size += len(chunk)
        return size


_MAX_HEADER_BLOCK = 16 * 1024


class _Stream:
    """A pull buffer over a chunk iterator."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.buffer = bytearray()
        self.eof = False

    def fill(self) -> bool:
        """Append the next chunk; False at the end of the input."""
        for chunk in self._chunks:
            if chunk:
                self.buffer += chunk
                return True
        self.eof = True
        return False


def iter_parts(chunks: Iterator[bytes], boundary: str) -> Iterator[Part]:
    """Parse a multipart body incrementally.

    Raises:
        DicomwebResponseError: the body is not well-formed multipart (e.g. truncated).
    """
    stream = _Stream(chunks)
    dash_boundary = b"--" + boundary.encode("ascii")
    delimiter = b"\r\n" + dash_boundary
    # The first boundary may come without the leading CRLF (RFC 2046 5.1.1).
    while True:
        index = stream.buffer.find(dash_boundary)
        if index >= 0:
            del stream.buffer[: index + len(dash_boundary)]
            break
        if not stream.fill():
            raise DicomwebResponseError("multipart body has no boundary")
    while True:
        while len(stream.buffer) < 2:
            if not stream.fill():
                raise DicomwebResponseError("multipart body truncated after a boundary")
        if stream.buffer[:2] == b"--":
            return
        headers = _read_headers(stream)
        part_body = _iter_body(stream, delimiter)
        part = Part(headers, part_body)
        yield part
        part.drain()


def _read_headers(stream: _Stream) -> dict[str, str]:
    while True:
        end = stream.buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(stream.buffer) > _MAX_HEADER_BLOCK or not stream.fill():
            raise DicomwebResponseError("multipart part headers are truncated or too long")
    block = bytes(stream.buffer[:end]).decode("latin-1")
    del stream.buffer[: end + 4]
    headers: dict[str, str] = {}
    # The first line is the rest of the boundary line (transport padding, then CRLF).
    for line in block.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _iter_body(stream: _Stream, delimiter: bytes) -> Iterator[bytes]:
    keep = len(delimiter) - 1
    while True:
        index = stream.buffer.find(delimiter)
        if index >= 0:
            if index:
                yield bytes(stream.buffer[:index])
            del stream.buffer[: index + len(delimiter)]
            return
        if len(stream.buffer) > keep:
            cut = len(stream.buffer) - keep
            yield bytes(stream.buffer[:cut])
            del stream.buffer[:cut]
        if not stream.fill():
            raise DicomwebResponseError("multipart body truncated inside a part")
