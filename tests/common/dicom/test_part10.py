"""Unit tests of Part 10 assembly from file meta + spooled dataset bytes."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from common.dicom.part10 import (
    IMPLEMENTATION_CLASS_UID,
    Part10Instance,
    build_file_meta,
    dataset_offset,
    meta_end,
)
from common.errors import MalformedDatasetError
from tests.support.samples import pydicom_test_file


def test_meta_and_dataset_make_a_readable_file(tmp_path: Path) -> None:
    source = pydicom_test_file("CT_small.dcm")
    ds = pydicom.dcmread(source)
    instance = Part10Instance.from_spooled(
        source,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        source_aet="MODALITY",
    )
    out = tmp_path / "out.dcm"
    instance.write_to(out)
    copy = pydicom.dcmread(out)
    assert copy.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert copy.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert copy.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # The dataset bytes are carried over unchanged.
    original = source.read_bytes()[dataset_offset(source) :]
    assert out.read_bytes()[dataset_offset(out) :] == original
    assert instance.size == out.stat().st_size
    assert b"".join(instance.iter_chunks(chunk_size=1000)) == out.read_bytes()


def test_meta_group_length_is_read() -> None:
    meta = build_file_meta(
        sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4", transfer_syntax_uid="1.2.840.10008.1.2"
    )
    assert meta[128:132] == b"DICM"


def test_not_part10(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 300)
    with pytest.raises(MalformedDatasetError):
        dataset_offset(junk)


@pytest.mark.parametrize("aet", ["", "MODALITY", "ODD"])
def test_hand_encoded_meta_matches_pydicom(aet: str, tmp_path: Path) -> None:
    from pydicom.filereader import read_file_meta_info

    meta = build_file_meta(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid="1.2.3.45",
        transfer_syntax_uid="1.2.840.10008.1.2.4.50", source_aet=aet,
    )
    (tmp_path / "meta.dcm").write_bytes(meta)
    parsed = read_file_meta_info(tmp_path / "meta.dcm")
    assert parsed.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert parsed.MediaStorageSOPInstanceUID == "1.2.3.45"
    assert parsed.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert parsed.FileMetaInformationVersion == b"\x00\x01"
    assert parsed.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert parsed.get("SourceApplicationEntityTitle", "") == aet
    assert parsed.FileMetaInformationGroupLength == len(meta) - 144
    assert meta_end(meta + b"x" * 10) == len(meta)


def test_an_instance_held_in_memory_reads_as_its_file_would(tmp_path: Path) -> None:
    """``loaded`` bytes need no file: every reader gives what the file would, at the file's
    positions (code that records and revisits positions works on either)."""
    source = pydicom_test_file("CT_small.dcm")
    ds = pydicom.dcmread(source)
    offset = dataset_offset(source)
    data = source.read_bytes()
    on_disk = Part10Instance.from_spooled(
        source,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
    )
    in_memory = Part10Instance.from_spooled(
        tmp_path / "never-written.dcm",
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        offset=offset,
        loaded=data[offset:],
    )
    assert in_memory.size == on_disk.size
    assert b"".join(in_memory.iter_chunks(chunk_size=999)) == b"".join(on_disk.iter_chunks())
    assert in_memory.read_dataset_bytes() == on_disk.read_dataset_bytes()
    with in_memory.open_dataset() as memory, on_disk.open_dataset() as disk:
        assert memory.tell() == disk.tell() == offset
        assert memory.read(100) == disk.read(100)
        assert memory.tell() == disk.tell() == offset + 100
        memory.seek(offset + 7)
        disk.seek(offset + 7)
        memory.seek(5, 1)
        disk.seek(5, 1)
        assert memory.read() == disk.read()
        assert memory.seek(-10, 2) == disk.seek(-10, 2)
        with pytest.raises(ValueError, match="before the dataset"):
            memory.seek(offset - 1)
    out = tmp_path / "out.dcm"
    in_memory.write_to(out)
    assert out.read_bytes()[dataset_offset(out) :] == data[offset:]
    assert not (tmp_path / "never-written.dcm").exists()
