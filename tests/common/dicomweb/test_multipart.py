"""Unit tests of multipart building and incremental parsing."""

from __future__ import annotations

import email.message
import email.parser
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.dicom.part10 import Part10Instance
from common.dicomweb import multipart
from common.dicomweb.multipart import MultipartBody, boundary_of, iter_parts, stow_body
from common.errors import DicomwebError, DicomwebResponseError
from common.http import FileRange
from tests.support.samples import pydicom_test_file


def _instance() -> Part10Instance:
    path = pydicom_test_file("CT_small.dcm")
    return Part10Instance.from_spooled(
        path, sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )


def test_stow_body_is_valid_multipart_related() -> None:
    instance = _instance()
    body, content_type = stow_body([instance])
    assert isinstance(body, bytes)
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = message.get_payload()
    assert isinstance(parts, list) and len(parts) == 1
    part = parts[0]
    assert isinstance(part, email.message.Message)
    assert part.get_content_type() == "application/dicom"
    assert part.get_payload(decode=True) == b"".join(instance.iter_chunks())


def test_large_bodies_stream_with_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = _instance()
    monkeypatch.setattr(multipart, "INLINE_LIMIT", 10)
    body, _ = stow_body([instance])
    assert isinstance(body, MultipartBody)
    streamed = b""
    while chunk := body.read(777):
        streamed += chunk
    assert len(streamed) == len(body)
    assert streamed == body.inline()
    assert instance.read_dataset_bytes() in streamed


@pytest.mark.parametrize("loaded", [False, True], ids=["spooled", "in-memory"])
def test_segments_hold_the_same_bytes_as_reading(loaded: bool) -> None:
    instance = _instance()
    if loaded:
        instance = replace(instance, loaded=instance.read_dataset_bytes())
    body = MultipartBody([instance], "B")
    joined = b""
    for segment in body.segments():
        if isinstance(segment, FileRange):
            segment.file.seek(segment.offset)
            joined += segment.file.read(segment.count)
        else:
            joined += segment
    assert joined == MultipartBody([instance], "B").read()
    assert len(joined) == len(body)


def _chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


BODY = (
    b"preamble\r\n--XYZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XY payload"
    b"\r\n--XYZ\r\nContent-Type: application/dicom\r\nContent-Length: 6\r\n\r\nsecond"
    b"\r\n--XYZ--\r\nepilogue"
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 10_000])
def test_parts_parse_at_any_chunking(chunk: int) -> None:
    parts = [(p.headers, b"".join(p.body)) for p in iter_parts(_chunked(BODY, chunk), "XYZ")]
    assert [body for _, body in parts] == [b"first\r\n--XY payload", b"second"]
    assert parts[1][0]["content-length"] == "6"


def test_unconsumed_parts_are_skipped() -> None:
    names = [p.content_type for p in iter_parts(_chunked(BODY, 5), "XYZ")]
    assert names == ["application/dicom", "application/dicom"]


@pytest.mark.parametrize("cut", [10, 40, len(BODY) - 20])
def test_truncated_body_raises(cut: int) -> None:
    with pytest.raises(DicomwebResponseError):
        for part in iter_parts(_chunked(BODY[:cut], 4), "XYZ"):
            part.drain()


def test_boundary_of() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a b"') == "a b"
    with pytest.raises(DicomwebResponseError):
        boundary_of("application/dicom+json")
    with pytest.raises(DicomwebResponseError):
        boundary_of("multipart/related")


def test_a_spool_file_that_shrank_fails_the_read_as_the_sendfile_path_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spooled.dcm"
    path.write_bytes(pydicom_test_file("CT_small.dcm").read_bytes())
    instance = Part10Instance.from_spooled(
        path, sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    with path.open("r+b") as file:
        file.truncate(instance.dataset_offset + 100)
    body = MultipartBody([instance], "B")
    with pytest.raises(DicomwebError, match=r"ended \d+ bytes early") as caught:
        while body.read(4096):
            pass
    assert not isinstance(caught.value, DicomwebResponseError)


def test_a_batch_body_parses_back_into_its_instances_in_order(tmp_path: Path) -> None:
    first, second = _instance(), _instance()
    spooled = tmp_path / "second.dcm"
    spooled.write_bytes(second.meta + second.read_dataset_bytes())
    second = Part10Instance.from_spooled(
        spooled, sop_class_uid=second.sop_class_uid, sop_instance_uid="1.2.3.5",
        transfer_syntax_uid=second.transfer_syntax_uid,
    )  # fmt: skip
    body = MultipartBody([first, second], "B")
    streamed = body.read()
    assert len(streamed) == len(body) == len(MultipartBody([first, second], "B").inline())
    bodies = []
    for part in iter_parts(iter([streamed]), "B"):
        assert part.content_type == "application/dicom"
        bodies.append(b"".join(part.body))
    assert bodies == [
        first.meta + first.read_dataset_bytes(),
        second.meta + second.read_dataset_bytes(),
    ]
