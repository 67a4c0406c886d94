"""Unit tests of de-identification: policies, UID formula, nested sequences, streaming files."""

from __future__ import annotations

import io
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from common.dicom.deidentify import (
    Action,
    FilterProfile,
    RedactionConfig,
    Redactor,
    basic_profile_action,
    chc_basic_keeps,
    name_based_uid,
    parse_tags,
)
from common.dicom.part10 import Part10Instance, build_file_meta, meta_end
from common.errors import ConfigError, MalformedDatasetError
from tests.support.samples import (
    make_large_instance,
    make_samples,
    pixel_data_bytes,
    pydicom_test_file,
)

CHC = RedactionConfig(profile=FilterProfile.CHC_BASIC)
PS315 = RedactionConfig(profile=FilterProfile.ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE)


def identified() -> Dataset:
    """A header with identifying values at the top level and inside nested sequences."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "111"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.PatientName = "Person^Name"
    ds.PatientID = "PID-1"
    ds.StudyDate = "20240102"
    ds.InstitutionName = "General Hospital"
    ds.IdentifyingComments = "Test String"
    ds.SurfaceComments = "Test Comments"
    ds.Rows = 2
    ds.Columns = 2
    inner = Dataset()
    inner.PatientName = "Nested^Name"
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = "9.8.7"
    deeper = Dataset()
    deeper.PatientName = "Deeper^Name"
    deeper.SOPInstanceUID = "5.6.7"
    inner.ReferencedSeriesSequence = [deeper]
    ds.ReferencedImageSequence = [inner]
    code = Dataset()
    code.CodeValue = "T-D3000"
    code.PatientName = "Coded^Name"
    code.ReferencedSOPInstanceUID = "9.8.6"
    ds.AnatomicRegionSequence = [code]
    ds.add_new(0x00091010, "LO", "private value")
    return ds


def values(ds: Dataset, keyword: str) -> list[object]:
    """Every value of ``keyword`` anywhere in ``ds``."""
    return [element.value for element in ds.iterall() if element.keyword == keyword]


# -- the UID formula and flag parsing -----------------------------------------------------------


def test_uids_follow_the_reference_formula() -> None:
    assert name_based_uid("111") == "2.25.140302709094137852884202099990798014056"
    # The reference redactor's own test expectation for "1.2.3".
    assert name_based_uid("1.2.3") == "2.25.235153174557024093797895412215599142974"


def test_tag_lists_accept_keywords_and_hex() -> None:
    assert parse_tags("PatientName, 00100020,,0008103e") == {0x00100010, 0x00100020, 0x0008103E}
    with pytest.raises(ConfigError):
        parse_tags("NotAKeyword")
    with pytest.raises(ConfigError):
        parse_tags("0010002")


def test_exactly_one_policy() -> None:
    assert RedactionConfig.from_options(None, None, None) is None
    with pytest.raises(ConfigError):
        RedactionConfig.from_options("PatientName", None, "CHC_BASIC")
    with pytest.raises(ConfigError):
        RedactionConfig.from_options(None, None, "NOPE")
    with pytest.raises(ConfigError):
        RedactionConfig()
    assert RedactionConfig.from_options("", None, None) == RedactionConfig(remove_tags=frozenset())


# -- policies on datasets -----------------------------------------------------------------------


def test_remove_list_empties_listed_attributes_everywhere() -> None:
    source = identified()
    out = Redactor(RedactionConfig(remove_tags=parse_tags("PatientName"))).redact(source)
    assert values(out, "PatientName") == ["", "", "", ""]
    assert out.InstitutionName == "General Hospital"
    assert out.SOPInstanceUID == name_based_uid("1.2.3")
    assert out.StudyInstanceUID == "2.25.140302709094137852884202099990798014056"
    nested = out.ReferencedImageSequence[0].ReferencedSeriesSequence[0]
    assert nested.SOPInstanceUID == name_based_uid("5.6.7")
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == "dicom-adapter: remove list"
    # The input is not touched.
    assert source.PatientName == "Person^Name" and source.SOPInstanceUID == "1.2.3"


def test_removing_a_sequence_empties_it() -> None:
    out = Redactor(RedactionConfig(remove_tags=parse_tags("ReferencedImageSequence"))).redact(
        identified()
    )
    assert len(out.ReferencedImageSequence) == 0
    assert sorted(map(str, values(out, "PatientName"))) == ["Coded^Name", "Person^Name"]


def test_keep_list_empties_the_rest_but_keeps_the_pixel_description() -> None:
    out = Redactor(RedactionConfig(keep_tags=parse_tags("PatientName"))).redact(identified())
    assert out.PatientName == "Person^Name"
    assert out.IdentifyingComments == ""
    assert out.Rows == 2 and out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert len(out.ReferencedImageSequence) == 0
    assert out[0x00091010].value == ""


def test_chc_basic_matches_the_reference_and_goes_into_sequences() -> None:
    out = Redactor(CHC).redact(identified())
    # As the reference redactor's CHC_BASIC test expects:
    assert out.PatientName == "" and out.IdentifyingComments == ""
    assert out.SurfaceComments == "Test Comments"
    assert out.PatientID == "" and out.StudyDate == "" and out.InstitutionName == ""
    assert out[0x00091010].value == ""
    assert len(out.ReferencedImageSequence) == 0  # an identifying sequence (E.1-1 X/Z/U*)
    item = out.AnatomicRegionSequence[0]
    assert item.CodeValue == "T-D3000"
    assert item.PatientName == "" and item.ReferencedSOPInstanceUID == ""
    assert out.SOPInstanceUID == name_based_uid("1.2.3")


def test_chc_basic_rules() -> None:
    assert chc_basic_keeps(0x00280010)  # Rows
    assert chc_basic_keeps(0x00080060)  # Modality
    assert not chc_basic_keeps(0x00100010)  # PatientName (PN)
    assert not chc_basic_keeps(0x00080021)  # SeriesDate (DA)
    assert not chc_basic_keeps(0x00200052)  # FrameOfReferenceUID
    assert not chc_basic_keeps(0x0008103E)  # SeriesDescription
    assert not chc_basic_keeps(0x00091010)  # private


def test_basic_profile_actions() -> None:
    out = Redactor(PS315).redact(identified())
    assert out.PatientName == "" and out.PatientID == "" and out.StudyDate == ""
    assert "InstitutionName" not in out and "IdentifyingComments" not in out
    assert 0x00091010 not in out
    item = out.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == name_based_uid("9.8.7")
    assert item.ReferencedSeriesSequence[0].PatientName == ""
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert basic_profile_action(0x60023000) is Action.REMOVE  # Overlay Data, repeating group
    assert basic_profile_action(0x00280010) is Action.KEEP
    assert basic_profile_action(0x00080106) is Action.DUMMY


def test_dummy_values_are_not_empty() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2"
    ds.add_new(0x00080106, "DT", "20200101")  # Context Group Version: D
    ds.ClinicalTrialSponsorName = "Sponsor"  # D
    out = Redactor(PS315).redact(ds)
    assert out[0x00080106].value == "19000101000000"
    assert out.ClinicalTrialSponsorName == "ANONYMIZED"


# -- spooled instances: streaming, every encoding ------------------------------------------------


def instance_of(path: Path) -> Part10Instance:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Part10Instance.from_spooled(
        path,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
    )


@pytest.mark.parametrize(
    "kind", ["explicit_le", "implicit_le", "big_endian", "jpeg_baseline", "jpeg2000", "rle",
             "multiframe"],
)  # fmt: skip
@pytest.mark.parametrize("config", [CHC, PS315], ids=["chc", "ps315"])
def test_redacted_instance_keeps_pixel_bytes(
    tmp_path: Path, kind: str, config: RedactionConfig
) -> None:
    (sample,) = make_samples(tmp_path / "in", [kind])
    result = Redactor(config).redact_instance(
        instance_of(sample.path), tmp_path / "out.dcm", source_aet="MODALITY"
    )
    raw = b"".join(result.iter_chunks())
    out = pydicom.dcmread(io.BytesIO(raw))
    assert out.SOPInstanceUID == result.sop_instance_uid == name_based_uid(sample.sop_instance_uid)
    assert out.file_meta.MediaStorageSOPInstanceUID == result.sop_instance_uid
    assert out.StudyInstanceUID == name_based_uid(sample.study_uid)
    assert out.SeriesInstanceUID == name_based_uid(sample.series_uid)
    assert out.file_meta.TransferSyntaxUID == sample.transfer_syntax_uid
    assert out.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert all(v in ("", None) for v in values(out, "PatientName"))
    assert out.PatientIdentityRemoved == "YES"
    assert pixel_data_bytes(raw) == pixel_data_bytes(sample.path)
    out.pixel_array  # still decodes  # noqa: B018


def test_elements_after_pixel_data_are_redacted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
    ds.DataSetTrailingPadding = b"\x00" * 8
    ds.add_new(0xFFFAFFFA, "SQ", [])
    source = tmp_path / "padded.dcm"
    ds.save_as(source)
    result = Redactor(PS315).redact_instance(instance_of(source), tmp_path / "out.dcm")
    out = pydicom.dcmread(io.BytesIO(b"".join(result.iter_chunks())))
    assert "DataSetTrailingPadding" not in out and 0xFFFAFFFA not in out
    assert out.PixelData == ds.PixelData
    kept = Redactor(CHC).redact_instance(instance_of(source), tmp_path / "kept.dcm")
    assert "PixelData" in pydicom.dcmread(io.BytesIO(b"".join(kept.iter_chunks())))


def test_removing_compressed_pixel_data_relabels_the_syntax(tmp_path: Path) -> None:
    (sample,) = make_samples(tmp_path / "in", ["jpeg_baseline"])
    assert sample.transfer_syntax_uid == JPEGBaseline8Bit
    config = RedactionConfig(remove_tags=parse_tags("PixelData"))
    result = Redactor(config).redact_instance(instance_of(sample.path), tmp_path / "out.dcm")
    out = pydicom.dcmread(io.BytesIO(b"".join(result.iter_chunks())))
    assert result.transfer_syntax_uid == ExplicitVRLittleEndian
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not out.PixelData


def test_deflated_instances_are_redacted_in_memory(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
    plain = io.BytesIO()
    pydicom.dcmwrite(plain, ds, implicit_vr=False, little_endian=True)
    body = plain.getvalue()[meta_end(plain.getvalue()) :]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(body) + compressor.flush()
    source = tmp_path / "deflated.dcm"
    meta = build_file_meta(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=DeflatedExplicitVRLittleEndian,
    )
    source.write_bytes(meta + deflated)
    result = Redactor(CHC).redact_instance(instance_of(source), tmp_path / "out.dcm")
    out = pydicom.dcmread(io.BytesIO(b"".join(result.iter_chunks())))
    assert out.PatientName == "" and out.PixelData == ds.PixelData
    assert out.SOPInstanceUID == name_based_uid(ds.SOPInstanceUID)


def test_truncated_input_is_a_malformed_dataset(tmp_path: Path) -> None:
    (sample,) = make_samples(tmp_path / "in", ["jpeg2000"])
    data = sample.path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 50])
    with pytest.raises(MalformedDatasetError):
        Redactor(CHC).redact_instance(instance_of(cut), tmp_path / "out.dcm")


def test_redaction_memory_is_bounded(tmp_path: Path) -> None:
    large = make_large_instance(tmp_path, 48)
    instance = instance_of(large.path)
    tracemalloc.start()
    try:
        Redactor(PS315).redact_instance(instance, tmp_path / "out.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a 48 MB instance"
    out = pydicom.dcmread(tmp_path / "out.dcm", defer_size=1024)
    assert out.PatientName == "" and out.NumberOfFrames == large_frames(large.path)


def large_frames(path: Path) -> int:
    return int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)
