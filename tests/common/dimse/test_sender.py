"""StoreSender, a pynetdicom SCP as the peer: past 128 contexts; a file sent with its meta."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

import common.dimse.sender as sender_module
from common.dicom.reference import InstanceReference
from common.dimse.fast.meta import FileMeta, read_file_meta
from common.dimse.sender import MAX_CONTEXTS, PeerAddress, SenderSettings, StoreSender
from import_adapter.retrieve.plan import COMMON_SYNTAXES, destination_pairs
from tests.support.ports import free_port
from tests.support.samples import write_minimal_instance

CLASSES = [
    str(cx.abstract_syntax) for cx in StoragePresentationContexts
    if uid_to_service_class(str(cx.abstract_syntax)) is StorageServiceClass
][:40]


@contextmanager
def destination(classes: list[str], received: list[Any]) -> Iterator[StoreSender]:
    """A sender to a pynetdicom storage SCP "DEST" that records each C-STORE request."""

    def on_store(event: Any) -> int:
        received.append(event.request)
        return 0x0000

    ae = AE(ae_title="DEST")
    for sop_class in classes:
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    sender = StoreSender(PeerAddress("DEST", "127.0.0.1", port), SenderSettings("MOVER"))
    try:
        yield sender
    finally:
        sender.close()
        server.shutdown()


def test_every_class_of_a_move_is_delivered_past_the_context_budget(tmp_path: Path) -> None:
    # A move destination offered every common syntax for 40 classes: far more than 128
    # contexts. The sender proposes what fits and negotiates again for the rest.
    assert len(CLASSES) * len(COMMON_SYNTAXES) > MAX_CONTEXTS
    received: list[Any] = []
    with destination(CLASSES, received) as sender:
        sender.propose(destination_pairs(
            InstanceReference(
                study_uid="1", series_uid="2", sop_instance_uid=str(i), sop_class_uid=sop_class
            )
            for i, sop_class in enumerate(CLASSES)
        ))
        sender.open()
        statuses = [sender.send(write_minimal_instance(tmp_path / f"{i}.dcm", sop_class, "SENDER"))
                    for i, sop_class in enumerate(CLASSES)]
    assert all(status.is_success for status in statuses)
    assert [str(request.AffectedSOPClassUID) for request in received] == CLASSES


def test_a_file_sent_with_its_meta_is_not_read_for_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A C-MOVE's prefetcher has read the meta: the sender takes it as given.
    path = write_minimal_instance(tmp_path / "one.dcm", CLASSES[0], "SENDER")
    meta = read_file_meta(path)

    def no_second_read(_path: Path) -> FileMeta:
        raise AssertionError("the file meta was read again")

    monkeypatch.setattr(sender_module, "read_file_meta", no_second_read)
    received: list[Any] = []
    with destination(CLASSES[:1], received) as sender:
        status = sender.send(path, meta=meta)
    assert status.is_success
    assert [str(request.AffectedSOPInstanceUID) for request in received] == [
        meta.sop_instance_uid
    ]
