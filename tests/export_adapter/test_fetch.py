"""InstanceFetcher and describe_part10: a retrieved file becomes the Part10Instance sinks take."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from common.dicom.part10 import dataset_offset
from common.dicom.reference import InstanceReference
from common.dicomweb.multipart import Part
from common.errors import MalformedDatasetError
from common.sinks import Origin
from export_adapter.errors import InstanceNotFoundError
from export_adapter.fetch import InstanceFetcher, describe_part10
from export_adapter.notification import NotifiedInstance
from export_adapter.source import parse_source_address
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
    fetched = describe_part10(ct.path, notified(ct))
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
        describe_part10(ct.path, notified(ct, "1.2.3.999"))


class Source:
    """A DicomwebApi whose WADO-RS answers with these files' bytes, one part each."""

    def __init__(self, *files: Path) -> None:
        self.files = files

    def retrieve(self, resource: Sequence[str], *, accept: str = "") -> Iterator[Part]:
        for path in self.files:
            yield Part({"content-type": "application/dicom"}, iter([path.read_bytes()]))


def _fetcher(*files: Path) -> InstanceFetcher:
    locator = parse_source_address("http://127.0.0.1:8042/dicom-web")
    return InstanceFetcher(Source(*files), locator)  # type: ignore[arg-type]


def test_the_first_part_is_the_instance_and_the_rest_are_ignored(
    ct: SampleInstance, tmp_path: Path
) -> None:
    other = make_samples(tmp_path / "other", ["explicit_le"])[0]
    destination = tmp_path / "fetched.dcm"
    fetched = _fetcher(ct.path, other.path).fetch(notified(ct), destination)
    assert destination.read_bytes() == ct.path.read_bytes()
    assert fetched.path == destination and fetched.size == ct.size
    assert fetched.instance.dataset_path == destination
    assert fetched.sop_instance_uid == ct.sop_instance_uid


def test_an_answer_without_a_part_is_not_found(ct: SampleInstance, tmp_path: Path) -> None:
    with pytest.raises(InstanceNotFoundError, match="no part"):
        _fetcher().fetch(notified(ct), tmp_path / "fetched.dcm")
