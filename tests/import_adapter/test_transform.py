"""TransformingSink: redaction and transcoding before the inner sink, statuses, temp files, flags."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import click
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from common.dicom.deidentify import FilterProfile, RedactionConfig, name_based_uid
from common.dicom.part10 import Part10Instance
from common.dicom.transcode import TranscodeSettings
from common.errors import DicomwebHttpError, TranscodeError
from common.sinks import Origin
from common.status import (
    SUCCESS,
    TRANSCODE_FALLBACK_WARNING,
    DimseStatus,
    Status,
    store_status_for_error,
)
from import_adapter.transform import TransformConfig, TransformingSink, combine
from import_adapter.transform_options import transform_config, transform_options
from tests.support.samples import SampleInstance, make_samples


class RecordingSink:
    """Keeps what it was given (bytes read during deliver, as a real sink would)."""

    def __init__(self, status: DimseStatus = SUCCESS) -> None:
        self.status = status
        self.received: list[tuple[bytes, Part10Instance, Origin]] = []
        self.closed = False

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        self.received.append((b"".join(instance.iter_chunks()), instance, origin))
        return self.status

    def describe(self) -> str:
        return "STORE"

    def close(self) -> None:
        self.closed = True


def spooled(sample: SampleInstance) -> tuple[Part10Instance, Origin]:
    instance = Part10Instance.from_spooled(
        sample.path,
        sop_class_uid=sample.sop_class_uid,
        sop_instance_uid=sample.sop_instance_uid,
        transfer_syntax_uid=sample.transfer_syntax_uid,
    )
    return instance, Origin("MODALITY", sample.path)


@pytest.fixture
def ct(tmp_path: Path) -> SampleInstance:
    return make_samples(tmp_path / "spool", ["explicit_le"])[0]


def leftovers(folder: Path, sample: SampleInstance) -> list[Path]:
    return [p for p in folder.iterdir() if p != sample.path]


def test_redaction_then_transcoding_reach_the_inner_sink(ct: SampleInstance) -> None:
    inner = RecordingSink()
    config = TransformConfig(
        redaction=RedactionConfig(profile=FilterProfile.CHC_BASIC),
        transcode=TranscodeSettings(target=JPEG2000Lossless),
    )
    status = TransformingSink(inner, config).deliver(*spooled(ct))
    assert status == SUCCESS
    ((raw, instance, origin),) = inner.received
    ds = pydicom.dcmread(io.BytesIO(raw))
    new_uid = name_based_uid(ct.sop_instance_uid)
    assert instance.sop_instance_uid == ds.SOPInstanceUID == new_uid
    assert instance.transfer_syntax_uid == JPEG2000Lossless
    # The inner sink is given the transformed file (the spool takes it over by renaming).
    assert origin == Origin("MODALITY", instance.dataset_path)
    assert origin.file != ct.path
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert ds.PatientName == "" and ds.PatientIdentityRemoved == "YES"
    assert (ds.pixel_array == pydicom.dcmread(ct.path).pixel_array).all()
    assert leftovers(ct.path.parent, ct) == []  # temporary files are gone


def test_untranscodable_instance_is_stored_unchanged_with_a_warning(ct: SampleInstance) -> None:
    inner = RecordingSink()
    config = TransformConfig(transcode=TranscodeSettings(target=JPEGBaseline8Bit))
    status = TransformingSink(inner, config).deliver(*spooled(ct))
    assert status.code == TRANSCODE_FALLBACK_WARNING == 0xB000
    assert status.is_warning and "JPEG Baseline" in status.comment
    ((raw, instance, _),) = inner.received
    assert instance.transfer_syntax_uid == ct.transfer_syntax_uid
    assert raw[instance.size - instance.dataset_length :] == ct.path.read_bytes()[
        -instance.dataset_length :
    ]
    assert leftovers(ct.path.parent, ct) == []


def test_strict_transcoding_fails_the_store(ct: SampleInstance) -> None:
    inner = RecordingSink()
    config = TransformConfig(transcode=TranscodeSettings(target=JPEGBaseline8Bit, strict=True))
    with pytest.raises(TranscodeError) as caught:
        TransformingSink(inner, config).deliver(*spooled(ct))
    assert inner.received == []
    assert store_status_for_error(caught.value).code == Status.CANNOT_UNDERSTAND
    assert leftovers(ct.path.parent, ct) == []


def test_matching_syntax_is_passed_through_untouched(tmp_path: Path) -> None:
    (rle,) = make_samples(tmp_path / "spool", ["rle"])
    inner = RecordingSink()
    instance, origin = spooled(rle)
    TransformingSink(inner, TransformConfig(transcode=TranscodeSettings(target=RLELossless))).deliver(
        instance, origin
    )
    ((_, delivered, delivered_origin),) = inner.received
    assert delivered is instance and delivered_origin is origin


def test_inner_errors_propagate_and_temp_files_are_removed(ct: SampleInstance) -> None:
    class Failing(RecordingSink):
        def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
            raise DicomwebHttpError(503)

    config = TransformConfig(redaction=RedactionConfig(remove_tags=frozenset({0x00100010})))
    with pytest.raises(DicomwebHttpError):
        TransformingSink(Failing(), config).deliver(*spooled(ct))
    assert leftovers(ct.path.parent, ct) == []


def test_work_dir_is_used_for_temporary_files(ct: SampleInstance, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    seen: list[Path] = []

    class Looking(RecordingSink):
        def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
            seen.append(instance.dataset_path)
            return super().deliver(instance, origin)

    config = TransformConfig(redaction=RedactionConfig(keep_tags=frozenset()))
    TransformingSink(Looking(), config, work_dir=work).deliver(*spooled(ct))
    assert seen[0].parent == work and list(work.iterdir()) == []


def test_an_inner_sink_may_take_the_transformed_file_over(ct: SampleInstance) -> None:
    taken = ct.path.parent / "taken.dcm"

    class Taking(RecordingSink):
        def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
            assert origin.file is not None
            origin.file.rename(taken)  # as the spool commits it
            return self.status

    config = TransformConfig(redaction=RedactionConfig(remove_tags=frozenset({0x00100010})))
    assert TransformingSink(Taking(), config).deliver(*spooled(ct)) == SUCCESS
    assert pydicom.dcmread(taken).SOPInstanceUID == name_based_uid(ct.sop_instance_uid)
    assert leftovers(ct.path.parent, ct) == [taken]


def test_describe_and_close_reach_the_inner_sink() -> None:
    inner = RecordingSink()
    sink = TransformingSink(inner, TransformConfig(transcode=TranscodeSettings(RLELossless)))
    assert sink.describe() == "transformed, then STORE"
    sink.close()
    assert inner.closed


def test_status_combination() -> None:
    warning = DimseStatus(0xB000, "stored untranscoded")
    assert combine(None, SUCCESS) == SUCCESS
    assert combine(warning, SUCCESS) == warning
    failure = DimseStatus(0xA700, "full")
    assert combine(warning, failure) == failure
    merged = combine(warning, DimseStatus(0xB007, "mismatch"))
    assert merged.code == 0xB000 and "mismatch" in merged.comment


# -- flags --------------------------------------------------------------------------------------


@click.command()
@transform_options
def probe(**params: Any) -> None:
    config = transform_config(params)
    click.echo(repr(config))


def test_flags_build_the_config() -> None:
    result = CliRunner().invoke(
        probe,
        ["--redact_filter_profile", "CHC_BASIC", "--store-compress-to-transfer-syntax",
         JPEG2000Lossless, "--transcode_strict"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "CHC_BASIC" in result.output and "strict=True" in result.output
    env = {"DICOM_ADAPTER_REDACT_REMOVE_LIST": "PatientName,00100020"}
    result = CliRunner().invoke(probe, [], env=env)
    assert result.exit_code == 0 and "remove_tags=frozenset" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--redact_remove_list", "PatientName", "--redact_keep_list", "PatientID"],
        ["--redact_remove_list", "PatientName", "--redact_filter_profile", "CHC_BASIC"],
        ["--redact_remove_list", "NoSuchKeyword"],
        ["--redact_filter_profile", "SOMETHING"],
        ["--store_compress_to_transfer_syntax", "1.2.3"],
    ],
)
def test_bad_flags_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
