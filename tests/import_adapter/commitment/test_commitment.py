"""Storage Commitment logic without a network: request validation, lookups, report, retries."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from common.errors import CommitmentRequestError, DicomwebConnectionError, PeerUnavailableError
from common.lifecycle import Lifecycle
from common.metrics import NullImportObserver
from common.retry import RetryPolicy
from common.status import SUCCESS, DimseStatus, Status
from import_adapter.commitment.report import ReportSettings
from import_adapter.commitment.service import (
    CommitmentService,
    CommitmentSettings,
    build_report,
    parse_request,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


class RecordingObserver(NullImportObserver):
    """Records commitment metrics."""

    def __init__(self) -> None:
        self.commitments: list[tuple[str, int, int]] = []

    def commitment_done(self, calling_aet: str, instances: int, failed: int) -> None:
        self.commitments.append((calling_aet, instances, failed))


def _info(refs: Sequence[tuple[str, str]], transaction: str = "1.2.3") -> Dataset:
    ds = Dataset()
    if transaction:
        ds.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = DicomSequence(items)
    return ds


@pytest.mark.parametrize(
    ("action", "info", "status"),
    [
        (2, _info([(CT, "1")]), Status.NO_SUCH_ACTION_TYPE),
        (1, _info([(CT, "1")], transaction=""), Status.MISSING_ATTRIBUTE),
        (1, _info([]), Status.MISSING_ATTRIBUTE),
        (1, _info([(CT, "")]), Status.INVALID_ARGUMENT_VALUE),
    ],
)
def test_invalid_requests(action: int, info: Dataset, status: Status) -> None:
    with pytest.raises(CommitmentRequestError) as caught:
        parse_request("SCU", action, info)
    assert caught.value.status == status


def test_report_event_types() -> None:
    request = parse_request("SCU", 1, _info([(CT, "1"), (CT, "2")]))
    event, ds = build_report("1.2.3", list(request.instances), [])
    assert event == 1 and len(ds.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in ds
    event, ds = build_report("1.2.3", [request.instances[0]], [(request.instances[1], 0x0112)])
    assert event == 2 and ds.FailedSOPSequence[0].FailureReason == 0x0112


class FakeStore:
    def __init__(self, instances: dict[str, str], fail: set[str]) -> None:
        self.instances = instances
        self.fail = fail

    def search(self, resource: Sequence[str], query: Any, *, page_size: int = 10,
               parallel: int = 1) -> Iterator[
        dict[str, Any]
    ]:
        uid = dict(query)["SOPInstanceUID"]
        if uid in self.fail:
            raise DicomwebConnectionError("down")
        if uid in self.instances:
            yield {"00080016": {"vr": "UI", "Value": [self.instances[uid]]}}


class FakePending:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def wait_uploaded(self, uids: Iterable[str], timeout: float) -> set[str]:
        self.asked.extend(uids)
        return set()


def test_service_checks_and_reports_with_retries() -> None:
    sent: list[tuple[PeerAddress, int, Dataset]] = []
    done = threading.Event()
    calls = {"n": 0}

    def sender(peer: PeerAddress, event: int, ds: Dataset, _s: ReportSettings) -> DimseStatus:
        calls["n"] += 1
        if calls["n"] < 3:
            raise PeerUnavailableError("requester down")
        sent.append((peer, event, ds))
        done.set()
        return SUCCESS

    peer = PeerAddress("SCU", "127.0.0.1", 11112)
    pending = FakePending()
    observer = RecordingObserver()
    service = CommitmentService(
        FakeStore({"1": CT, "2": MR}, {"4"}),  # type: ignore[arg-type]
        AetDictionary([peer]),
        CommitmentSettings(report_retry=RetryPolicy(initial_delay=0.01, max_delay=0.02,
                                                    budget=5)),
        Lifecycle(),
        pending,
        sender,
        observer=observer,
    )
    info = _info([(CT, "1"), (CT, "2"), (CT, "3"), (CT, "4")])
    assert service.request("SCU", 1, info) == SUCCESS
    assert done.wait(5)
    peer_sent, event, ds = sent[0]
    assert peer_sent == peer and event == 2 and calls["n"] == 3
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == ["1"]
    reasons = {i.ReferencedSOPInstanceUID: i.FailureReason for i in ds.FailedSOPSequence}
    assert reasons == {"2": 0x0119, "3": 0x0112, "4": 0x0110}
    assert pending.asked == ["1", "2", "3", "4"]
    assert observer.commitments == [("SCU", 4, 3)]
    assert service.request("OTHER", 1, info).code == Status.PROCESSING_FAILURE
    service.stop()
