"""Import adapter de-identification and transcoding, across the real wire.

DCMTK storescu sends each sample (every syntax pydicom ships a file for, each in its own
presentation context) to the adapter, which transforms and STOWs to Orthanc; the instances are
fetched back with WADO-RS as stored (Orthanc is never asked to transcode) and decoded here with
pydicom + pylibjpeg/openjpeg/pyjpegls.

Matrix: all sample kinds x 6 targets (Explicit VR LE, RLE, JPEG Baseline, JPEG 2000 lossless and
lossy, JPEG-LS lossless), one adapter and one storescu association per target (the samples are
small: about 2 s per target). Redaction: 3 policies x 5 kinds plus an instance with identifying
values in nested sequences and private attributes; one combined redaction + transcoding run.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config

from common.dicom.deidentify import FilterProfile, RedactionConfig, name_based_uid, parse_tags
from common.dicom.transcode import TARGET_SYNTAXES, TranscodeSettings
from common.status import TRANSCODE_FALLBACK_WARNING, Status
from import_adapter.app import ImportAdapter
from import_adapter.transform import TransformConfig
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_samples, pixel_data_bytes, restamp

TARGETS = [ExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit, JPEG2000Lossless, JPEG2000,
           JPEGLSLossless]  # fmt: skip
LOSSY = {JPEGBaseline8Bit, JPEG2000}


@pytest.fixture
def adapter_with(orthanc: OrthancServer) -> Iterator[object]:
    """Factory: start an import adapter with a TransformConfig (stopped at the end)."""
    started: list[object] = []

    def start(config: TransformConfig) -> ImportAdapter:
        context = running_import_adapter(orthanc.dicomweb_url, transform=config)
        adapter = context.__enter__()
        started.append(context)
        return adapter

    yield start
    for context in started:
        context.__exit__(None, None, None)  # type: ignore[attr-defined]


def send(adapter: ImportAdapter, paths: list[Path]) -> None:
    result = dcmtk.storescu(
        "127.0.0.1", adapter.server.port, paths, IMPORT_AET, per_file_syntax=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def fetch(orthanc: OrthancServer, study: str, series: str, instance: str) -> bytes:
    return orthanc.wado_instance(study, series, instance)


def jpeg_baseline_possible(ds: Dataset) -> bool:
    return bool(ds.BitsAllocated == 8 and ds.PixelRepresentation == 0 and (
        ds.PhotometricInterpretation != "PALETTE COLOR"
    ))


def expected_photometric(source: Dataset, target: str) -> str:
    if source.SamplesPerPixel == 1:
        return str(source.PhotometricInterpretation)
    return "YBR_FULL_422" if target == JPEGBaseline8Bit else "RGB"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: TARGET_SYNTAXES[t])
def test_every_sample_syntax_is_transcoded(
    adapter_with: object, orthanc: OrthancServer, tmp_path: Path, target: str
) -> None:
    samples = make_samples(tmp_path / "samples")
    adapter = adapter_with(TransformConfig(transcode=TranscodeSettings(target=target)))  # type: ignore[operator]
    send(adapter, [s.path for s in samples])
    for sample in samples:
        raw = fetch(orthanc, sample.study_uid, sample.series_uid, sample.sop_instance_uid)
        stored = pydicom.dcmread(io.BytesIO(raw))
        source = pydicom.dcmread(sample.path)
        assert stored.SOPInstanceUID == sample.sop_instance_uid
        untouched = sample.transfer_syntax_uid == target or (
            target == JPEGBaseline8Bit and not jpeg_baseline_possible(source)
        )
        if untouched:  # already there, or stored unchanged with a warning
            assert stored.file_meta.TransferSyntaxUID == sample.transfer_syntax_uid, sample.kind
            assert pixel_data_bytes(raw) == pixel_data_bytes(sample.path), sample.kind
            continue
        assert stored.file_meta.TransferSyntaxUID == target, sample.kind
        before, after = source.pixel_array, stored.pixel_array
        assert before.shape == after.shape, sample.kind
        difference = np.abs(before.astype(np.int64) - after.astype(np.int64))
        if target in LOSSY:
            assert difference.mean() < 0.02 * (1 << int(source.BitsStored)), sample.kind
            assert stored.LossyImageCompression == "01"
        else:
            assert difference.max() == 0, sample.kind
        assert stored.PhotometricInterpretation == expected_photometric(source, target), (
            sample.kind
        )


def test_fallback_and_strict_statuses_on_the_wire(
    adapter_with: object, orthanc: OrthancServer, tmp_path: Path
) -> None:
    (ct,) = make_samples(tmp_path / "a", ["explicit_le"])
    lenient = adapter_with(TransformConfig(transcode=TranscodeSettings(target=JPEGBaseline8Bit)))  # type: ignore[operator]
    status = c_store(lenient.server.port, ct.path)
    assert status.Status == TRANSCODE_FALLBACK_WARNING
    assert "JPEG Baseline" in str(status.ErrorComment)
    assert fetch(orthanc, ct.study_uid, ct.series_uid, ct.sop_instance_uid)
    (other,) = make_samples(tmp_path / "b", ["explicit_le"])
    strict = adapter_with(  # type: ignore[operator]
        TransformConfig(transcode=TranscodeSettings(target=JPEGBaseline8Bit, strict=True))
    )
    assert c_store(strict.server.port, other.path).Status == Status.CANNOT_UNDERSTAND
    assert not orthanc.qido("/instances", {"SOPInstanceUID": other.sop_instance_uid})


def c_store(port: int, path: Path) -> Dataset:
    _config.STORE_SEND_CHUNKED_DATASET = True
    meta = pydicom.filereader.read_file_meta_info(path)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


# -- de-identification --------------------------------------------------------------------------

SECRETS = ("Secret^Patient", "SECRET-ID-42", "Secret General Hospital", "Nested^Secret",
           "PRIVATE-SECRET", "Deeper-Secret-ID")  # fmt: skip


def identifying_sample(directory: Path) -> SampleInstance:
    """CT_small with identifying values at the top level, in nested sequences and private tags."""
    (ct,) = make_samples(directory, ["explicit_le"])
    ds = pydicom.dcmread(ct.path)
    ds.PatientName = SECRETS[0]
    ds.PatientID = SECRETS[1]
    ds.InstitutionName = SECRETS[2]
    ds.ReferringPhysicianName = "Secret^Doctor"
    ds.add_new(0x00190010, "LO", "ACME")
    ds.add_new(0x00191010, "LO", SECRETS[4])
    other = Dataset()
    other.PatientID = SECRETS[5]
    other.IssuerOfPatientID = "Secret Issuer"
    code = Dataset()
    code.CodeValue = "T-D3000"
    code.CodingSchemeDesignator = "SRT"
    code.PatientName = SECRETS[3]
    code.OtherPatientIDsSequence = [other]
    ds.AnatomicRegionSequence = [code]
    ds.OtherPatientIDsSequence = [other]
    ds.save_as(ct.path, enforce_file_format=False)
    return restamp(ct.path, directory / "identifying.dcm", kind="identifying",
                   study_uid=ct.study_uid, series_uid=ct.series_uid,
                   sop_instance_uid=generate_uid())  # fmt: skip


POLICIES = {
    "ps315": RedactionConfig(profile=FilterProfile.ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE),
    "chc_basic": RedactionConfig(profile=FilterProfile.CHC_BASIC),
    "remove_list": RedactionConfig(
        remove_tags=parse_tags(
            "PatientName,PatientID,InstitutionName,ReferringPhysicianName,00191010,PatientBirthDate"
        )
    ),
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_redaction_leaves_no_identifier_and_uses_the_reference_uids(
    adapter_with: object, orthanc: OrthancServer, tmp_path: Path, policy: str
) -> None:
    samples = [
        *make_samples(tmp_path / "s", ["implicit_le", "big_endian", "jpeg2000", "multiframe"]),
        identifying_sample(tmp_path / "id"),
    ]
    adapter = adapter_with(TransformConfig(redaction=POLICIES[policy]))  # type: ignore[operator]
    send(adapter, [s.path for s in samples])
    for sample in samples:
        source = pydicom.dcmread(sample.path)
        study, series, sop = (
            name_based_uid(sample.study_uid),
            name_based_uid(sample.series_uid),
            name_based_uid(sample.sop_instance_uid),
        )
        raw = fetch(orthanc, study, series, sop)  # found under the reference adapter's UIDs
        stored = pydicom.dcmread(io.BytesIO(raw))
        assert stored.file_meta.MediaStorageSOPInstanceUID == sop
        for original in (sample.study_uid, sample.series_uid, sample.sop_instance_uid):
            assert original.encode() not in raw, (sample.kind, "original UID survived")
        # Profiles leave no copy of the patient's name or ID anywhere; a remove list only
        # empties what it lists (the MR samples repeat the Patient ID as Study ID).
        secrets = [str(source.get("PatientName", "")), str(source.get("PatientID", ""))]
        secrets = [s for s in secrets[: 1 if policy == "remove_list" else 2] if s]
        if sample.kind == "identifying":
            secrets += list(SECRETS)
        for secret in secrets:
            assert secret.encode() not in raw, (sample.kind, secret)
        for element in stored.iterall():
            if element.keyword in ("PatientName", "PatientID", "InstitutionName"):
                assert element.value in ("", None), (sample.kind, element.keyword)
        assert stored.PatientIdentityRemoved == "YES"
        assert stored.file_meta.TransferSyntaxUID == sample.transfer_syntax_uid
        assert pixel_data_bytes(raw) == pixel_data_bytes(sample.path), sample.kind


def test_redaction_and_transcoding_together(
    adapter_with: object, orthanc: OrthancServer, tmp_path: Path
) -> None:
    samples = [*make_samples(tmp_path / "s", ["rle", "jpeg_lossless"]),
               identifying_sample(tmp_path / "id")]  # fmt: skip
    config = TransformConfig(
        redaction=POLICIES["ps315"], transcode=TranscodeSettings(target=JPEG2000Lossless)
    )
    send(adapter_with(config), [s.path for s in samples])  # type: ignore[operator]
    for sample in samples:
        raw = fetch(
            orthanc,
            name_based_uid(sample.study_uid),
            name_based_uid(sample.series_uid),
            name_based_uid(sample.sop_instance_uid),
        )
        stored = pydicom.dcmread(io.BytesIO(raw))
        assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
        assert (stored.pixel_array == pydicom.dcmread(sample.path).pixel_array).all()
        assert stored.PatientName == "" and 0x00191010 not in stored
