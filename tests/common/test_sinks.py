"""The shared sinks: STOW-RS (fake client) and C-STORE (pynetdicom's SCP on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from common.dicom.part10 import Part10Instance, meta_end
from common.dicomweb.client import StowResult
from common.dimse.sender import PeerAddress, SenderSettings
from common.errors import PeerUnavailableError
from common.sinks import DimseSink, InstanceSink, Origin, StowSink
from common.status import SUCCESS, DimseStatus
from tests.support.ports import free_port
from tests.support.samples import SampleInstance, make_samples
from tests.support.scripted_pacs import ScriptedPacs


@pytest.fixture
def ct(tmp_path: Path) -> SampleInstance:
    return make_samples(tmp_path / "in", ["explicit_le"])[0]


def described(sample: SampleInstance, *, in_memory: bool = False) -> Part10Instance:
    data = sample.path.read_bytes()
    offset = meta_end(data[:144])
    return Part10Instance.from_spooled(
        sample.path,
        sop_class_uid=sample.sop_class_uid,
        sop_instance_uid=sample.sop_instance_uid,
        transfer_syntax_uid=sample.transfer_syntax_uid,
        offset=offset,
        loaded=data[offset:] if in_memory else None,
    )


class FakeStore:
    """Records what STOW-RS would send; answers with ``status``."""

    def __init__(self, status: DimseStatus = SUCCESS) -> None:
        self.status = status
        self.stored: list[bytes] = []

    def store(self, instance: Part10Instance) -> StowResult:
        self.stored.append(b"".join(instance.iter_chunks()))
        return StowResult(self.status, 200)

    def __getattr__(self, name: str) -> Any:  # search, retrieve...: not used by the sink
        raise AttributeError(name)


def test_stow_sink_stores_the_instance_and_answers_the_store_status(ct: SampleInstance) -> None:
    warning = DimseStatus(0xB000, "coerced")
    store = FakeStore(warning)
    sink: InstanceSink = StowSink(store, "http://store/dicomWeb")
    instance = described(ct)
    assert sink.deliver(instance, Origin("MODALITY", ct.path)) == warning
    assert store.stored == [b"".join(instance.iter_chunks())]
    assert sink.describe() == "http://store/dicomWeb"
    sink.close()


@pytest.fixture
def storescp() -> Iterator[ScriptedPacs]:
    """pynetdicom's C-STORE SCP (an independent implementation) on a free loopback port."""
    with ScriptedPacs(aet="STORESCP", sop_classes=[CTImageStorage]) as pacs:
        yield pacs


@pytest.mark.parametrize("in_memory", [False, True], ids=["file", "memory"])
def test_dimse_sink_stores_across_the_wire(
    storescp: ScriptedPacs, ct: SampleInstance, in_memory: bool
) -> None:
    port = storescp.port
    sink = DimseSink(PeerAddress("STORESCP", "127.0.0.1", port), SenderSettings("EXPORTER"))
    instance = described(ct, in_memory=in_memory)
    # An instance held in memory has no file of its own: the sink writes a scratch copy.
    origin = Origin() if in_memory else Origin(file=ct.path)
    try:
        assert sink.deliver(instance, origin) == SUCCESS
        assert sink.deliver(instance, origin) == SUCCESS  # the same association, reused
    finally:
        sink.close()
    assert storescp.received == [ct.sop_instance_uid] * 2
    assert sink.describe() == f"STORESCP@127.0.0.1:{port}"
    assert sorted(p.name for p in ct.path.parent.iterdir()) == [ct.path.name]  # no scratch left


def test_dimse_sink_unreachable_peer_raises_ours(ct: SampleInstance) -> None:
    sink = DimseSink(
        PeerAddress("NOBODY", "127.0.0.1", free_port()),
        SenderSettings("EXPORTER", connect_timeout=2),
    )
    with pytest.raises(PeerUnavailableError):
        sink.deliver(described(ct), Origin(file=ct.path))
    sink.close()


def test_dimse_sink_needs_an_association() -> None:
    with pytest.raises(ValueError):
        DimseSink(PeerAddress("A", "127.0.0.1", 1), SenderSettings(), max_associations=0)

