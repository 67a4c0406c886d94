"""The N-EVENT-REPORT sender on our own DIMSE engine, against pynetdicom report receivers."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    Verification,
)

from common.dimse.sender import PeerAddress
from common.errors import (
    AssociationRejectedError,
    PeerRejectedError,
    PeerUnavailableError,
)
from import_adapter.commitment.report import (
    EVENT_SOME_FAILED,
    STORAGE_COMMITMENT_INSTANCE_UID,
    ReportSettings,
    send_report,
)
from tests.support.ports import free_port

LOCALHOST = "127.0.0.1"
SETTINGS = ReportSettings(calling_aet="IMPORTADAPTER", timeout=5.0)


def _report() -> Dataset:
    ds = Dataset()
    ds.TransactionUID = "1.2.3.4"
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    item.FailureReason = 0x0112
    ds.FailedSOPSequence = [item]
    return ds


Receiver = Callable[..., tuple[int, "queue.Queue[Any]"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    servers: list[Any] = []

    def start(
        syntaxes: list[str] | None = None,
        status: int = 0x0000,
        roles: bool = True,
        supported: Any = StorageCommitmentPushModel,
        reply: Dataset | None = None,
        abort: bool = False,
    ) -> tuple[int, queue.Queue[Any]]:
        events: queue.Queue[Any] = queue.Queue()
        ae = AE(ae_title="COMMITSCU")
        ae.require_called_aet = True
        role_args = {"scu_role": False, "scp_role": True} if roles else {}
        ae.add_supported_context(
            supported, syntaxes or [ExplicitVRLittleEndian, ImplicitVRLittleEndian], **role_args
        )

        def on_report(event: Any) -> tuple[int, Dataset | None]:
            if abort:
                event.assoc.abort()
                return status, None
            cx = event.context
            events.put((
                int(event.request.EventTypeID),
                str(event.request.AffectedSOPClassUID),
                str(event.request.AffectedSOPInstanceUID),
                event.event_information,
                str(cx.transfer_syntax),
                event.assoc.requestor.ae_title,
            ))
            return status, reply

        port = free_port()
        servers.append(ae.start_server(
            (LOCALHOST, port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
        ))
        return port, events

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_report_arrives_in_the_syntax_the_receiver_accepts(receiver: Receiver, syntax: str) -> None:
    port, events = receiver([syntax])
    status = send_report(PeerAddress("COMMITSCU", LOCALHOST, port), EVENT_SOME_FAILED,
                         _report(), SETTINGS)
    assert status.is_success
    event_type, sop_class, instance, info, used, caller = events.get(timeout=5)
    assert event_type == EVENT_SOME_FAILED
    assert sop_class == str(StorageCommitmentPushModel)
    assert instance == STORAGE_COMMITMENT_INSTANCE_UID
    assert used == str(syntax)
    assert caller == "IMPORTADAPTER"
    assert info.TransactionUID == "1.2.3.4"
    assert info.FailedSOPSequence[0].FailureReason == 0x0112
    assert info.FailedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5"


def test_receiver_without_a_role_answer_still_gets_its_report(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # An acceptor that accepts the context without answering the role proposal (PS3.7
    # D.3.3.4 then gives the default roles): the report is sent all the same, as before.
    caplog.set_level(logging.INFO, logger="import_adapter.commitment.report")
    port, events = receiver()
    assert send_report(PeerAddress("COMMITSCU", LOCALHOST, port), 1, _report(), SETTINGS).is_success
    assert "did not grant" not in caplog.text  # this one granted the SCP role
    port, events = receiver(roles=False)
    status = send_report(PeerAddress("COMMITSCU", LOCALHOST, port), 1, _report(), SETTINGS)
    assert status.is_success
    assert events.get(timeout=5)[0] == 1
    assert "did not grant us the Storage Commitment SCP role (no reply)" in caplog.text


def test_receiver_failure_status_is_returned(receiver: Receiver) -> None:
    port, _events = receiver(status=0x0110)
    status = send_report(PeerAddress("COMMITSCU", LOCALHOST, port), 1, _report(), SETTINGS)
    assert status.code == 0x0110
    assert status.is_failure


def test_refusals_and_an_absent_receiver(receiver: Receiver) -> None:
    port, _ = receiver(supported=Verification)
    with pytest.raises(PeerRejectedError, match="no Storage Commitment context"):
        send_report(PeerAddress("COMMITSCU", LOCALHOST, port), 1, _report(), SETTINGS)
    port, _ = receiver()
    with pytest.raises(AssociationRejectedError):
        send_report(PeerAddress("WRONGAET", LOCALHOST, port), 1, _report(), SETTINGS)
    with pytest.raises(PeerUnavailableError):
        send_report(PeerAddress("COMMITSCU", LOCALHOST, free_port()), 1, _report(), SETTINGS)


def test_an_event_reply_is_read_and_the_association_released(receiver: Receiver) -> None:
    reply = Dataset()
    reply.TransactionUID = "1.2.3.4"
    port, events = receiver(reply=reply)
    peer = PeerAddress("COMMITSCU", LOCALHOST, port)
    for _ in range(2):  # the second report proves the first association ended cleanly
        assert send_report(peer, 1, _report(), SETTINGS).is_success
        assert events.get(timeout=5)[0] == 1


def test_receiver_aborting_instead_of_answering_is_unavailable(receiver: Receiver) -> None:
    port, _ = receiver(abort=True)
    with pytest.raises(PeerUnavailableError, match="N-EVENT-REPORT to COMMITSCU@"):
        send_report(PeerAddress("COMMITSCU", LOCALHOST, port), 1, _report(), SETTINGS)
