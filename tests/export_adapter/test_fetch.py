"""describe_part10: a retrieved file becomes the Part10Instance sinks take (pure file reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.dicom.part10 import dataset_offset
from common.dicom.reference import InstanceReference
from common.errors import MalformedDatasetError
from common.sinks import Origin
from export_adapter.fetch import describe_part10
from export_adapter.notification import NotifiedInstance
from tests.support.samples import SampleInstance, make_samples


@pytest.fixture
def ct(tmp_path: Path) -> SampleInstance:
    return make_samples(tmp_path, ["explicit_le"])[0]


def notified(sample: SampleInstance, sop_instance_uid: str | None = None) -> NotifiedInstance:
    return NotifiedInstance(InstanceReference(
        study_uid=sample.study_uid, series_uid=sample.series_uid,
        sop_instance_uid=sop_instance_uid or sample.sop_instance_uid,
    ))  # fmt: skip


def test_a_retrieved_file_is_described_from_its_file_meta(ct: SampleInstance) -> None:
    fetched = describe_part10(ct.path, ct.size, notified(ct))
    instance = fetched.instance
    assert (instance.sop_class_uid, instance.sop_instance_uid, instance.transfer_syntax_uid) == (
        ct.sop_class_uid, ct.sop_instance_uid, ct.transfer_syntax_uid
    )
    assert instance.dataset_path == ct.path and instance.loaded is None
    assert instance.dataset_offset == dataset_offset(ct.path)
    assert instance.dataset_length == ct.size - instance.dataset_offset
    # The dataset bytes go out as retrieved, behind freshly built file meta.
    streamed = b"".join(instance.iter_chunks())
    assert streamed[len(instance.meta) :] == ct.path.read_bytes()[instance.dataset_offset :]
    assert fetched.size == ct.size and fetched.sop_instance_uid == ct.sop_instance_uid
    assert fetched.origin == Origin(file=ct.path)


def test_another_instance_than_asked_for_is_malformed(ct: SampleInstance) -> None:
    with pytest.raises(MalformedDatasetError, match="when asked for"):
        describe_part10(ct.path, ct.size, notified(ct, "1.2.3.999"))
