"""A Storage Commitment requester for real-wire tests: N-ACTION SCU and N-EVENT-REPORT listener."""

from __future__ import annotations

import queue
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from tests.support.adapters import IMPORT_AET
from tests.support.ports import free_port

REQUESTER = "COMMITSCU"


class Requester:
    """The modality side: N-ACTION SCU, and an N-EVENT-REPORT listener on a fixed port."""

    def __init__(self, syntaxes: list[str]) -> None:
        self.port = free_port()
        self.syntaxes = syntaxes
        self.reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()
        self._server: Any = None

    def listen(self) -> None:
        ae = AE(ae_title=REQUESTER)
        ae.add_supported_context(
            StorageCommitmentPushModel, self.syntaxes, scu_role=False, scp_role=True
        )

        def on_report(event: Any) -> tuple[int, None]:
            self.reports.put((int(event.event_type), event.event_information))
            return 0x0000, None

        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def request(self, adapter_port: int, refs: list[tuple[str, str]]) -> tuple[str, int]:
        """Send N-ACTION; returns (transaction UID, N-ACTION status)."""
        transaction = generate_uid()
        info = Dataset()
        info.TransactionUID = transaction
        items = []
        for sop_class, sop_instance in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            items.append(item)
        info.ReferencedSOPSequence = DicomSequence(items)
        ae = AE(ae_title=REQUESTER)
        ae.add_requested_context(StorageCommitmentPushModel, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", adapter_port, ae_title=IMPORT_AET)
        assert assoc.is_established
        try:
            status, _ = assoc.send_n_action(
                info, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
            )
        finally:
            assoc.release()
        return transaction, int(status.Status)

    def report(self, timeout: float = 20.0) -> tuple[int, Dataset]:
        return self.reports.get(timeout=timeout)


def aet_dictionary_json(item: Requester) -> str:
    """``--aet_dictionary_inline`` naming the requester (for adapters run as processes)."""
    return f'[{{"name": "{REQUESTER}", "host": "127.0.0.1", "port": {item.port}}}]'
