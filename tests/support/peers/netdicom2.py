"""pynetdicom2 (PyPI ``pynetdicom2``, a Python code base apart from pynetdicom) as a peer, in process.

pynetdicom2 pads AE titles with NUL bytes rather than spaces (a real client's habit, which
:attr:`PyNetDicom2.nul_padding` keeps for the test of just that); the matrix passes the titles
already padded with spaces to 16 characters, so that NUL handling does not hide the rest.
It sends User Identity itself for a username (type 1) or username and password (type 2) from
the remote AE settings; a sub-item asking for a positive response is passed as a custom user
item. Its C-MOVE destination and Storage Commitment report receiver is its own ``AE`` server.
"""

from __future__ import annotations

import queue
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from common.dimse.fast.constants import VERIFICATION_SOP_CLASS
from import_adapter.query.model import STUDY_ROOT
from tests.support.components import missing
from tests.support.peers import Outcome, Report, Target
from tests.support.peers.common import STORAGE_COMMITMENT_PUSH_MODEL


def _sop_classes(files: list[Path]) -> list[UID]:
    return sorted({UID(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files})


class PyNetDicom2:
    """pynetdicom2: echo, store, find, move, get, Storage Commitment, TLS, user identity."""

    name = "pynetdicom2"
    operations = frozenset({"echo", "store", "find", "move", "get", "commit", "tls",
                            "user_identity", "user_identity_response"})

    def __init__(self, *, nul_padding: bool = False,
                 syntaxes: tuple[str, ...] = (pydicom.uid.ExplicitVRLittleEndian,)) -> None:
        self.nul_padding = nul_padding
        self.syntaxes = tuple(UID(s) for s in syntaxes)

    def _with_syntaxes(self, ae: Any) -> Any:
        # pynetdicom2 keeps its transfer syntaxes in a frozenset, so the order it proposes them
        # in (and what the adapter accepts) would change from run to run: an ordered tuple
        # (it only iterates over them) makes every context propose ``syntaxes`` in order.
        ae.supported_ts = self.syntaxes
        return ae

    def _title(self, title: str) -> str:
        return title if self.nul_padding else title.ljust(16)

    def available(self) -> None:
        try:
            import pynetdicom2  # noqa: F401
        except ImportError:
            missing("PyPI package pynetdicom2 is not installed (scripts/install)")

    # --- association plumbing

    def _client(self, target: Target, calling: str) -> Any:
        from pynetdicom2 import applicationentity, ssl_ae

        if target.tls is None:
            return self._with_syntaxes(applicationentity.ClientAE(self._title(calling)))
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(target.tls.ca))
        context.load_cert_chain(str(target.tls.cert), str(target.tls.key))
        # pynetdicom2 wraps the socket without a server name: the chain is still verified
        # against the test CA (CERT_REQUIRED), the name cannot be.
        context.check_hostname = False
        return self._with_syntaxes(ssl_ae.SSLClientAE(context, self._title(calling)))

    @contextmanager
    def _associate(self, ae: Any, target: Target, outcome: Outcome) -> Iterator[Any]:
        from pynetdicom2 import userdataitems

        remote: dict[str, Any] = {"aet": self._title(target.called_aet), "address": target.host,
                                  "port": target.port}
        identity = target.user_identity
        if identity is not None and identity.response_requested:
            remote["user_data"] = [userdataitems.UserIdentityNegotiationSubItem(
                identity.username, identity.password, user_identity_type=identity.kind,
                positive_response_req=1)]
        elif identity is not None:
            remote["username"] = identity.username
            remote["password"] = identity.password or None

        seen: list[Any] = []
        ae.on_association_response = seen.append
        with ae.request_association(remote) as assoc:
            for item in seen[0].variable_items[-1].user_data if seen else []:
                if isinstance(item, userdataitems.UserIdentityNegotiationSubItemAc):
                    response = item.server_response
                    outcome.user_identity_response = (
                        response.encode() if isinstance(response, str) else response)
            yield assoc

    # --- operations

    def echo(self, target: Target, calling: str) -> Outcome:
        from pynetdicom2 import sopclass

        outcome = Outcome(log="pynetdicom2 echo")
        ae = self._client(target, calling).add_scu(sopclass.verification_scu)
        with self._associate(ae, target, outcome) as assoc:
            outcome.statuses.append(int(assoc.get_scu(VERIFICATION_SOP_CLASS)(1)))
        return outcome

    def store(self, target: Target, calling: str, files: list[Path]) -> Outcome:
        from pynetdicom2 import sopclass

        outcome = Outcome(log="pynetdicom2 store")
        ae = self._client(target, calling).add_scu(sopclass.storage_scu, _sop_classes(files))
        with self._associate(ae, target, outcome) as assoc:
            for index, path in enumerate(files, start=1):
                sop_class = pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID
                status = assoc.get_scu(UID(sop_class))(str(path), index)
                outcome.statuses.append(int(status))
        return outcome

    def find(self, target: Target, calling: str, study_uid: str) -> Outcome:
        from pynetdicom2 import sopclass

        outcome = Outcome(log="pynetdicom2 find")
        keys = Dataset()
        keys.QueryRetrieveLevel = "STUDY"
        keys.StudyInstanceUID = study_uid
        keys.PatientID = ""
        keys.StudyDate = ""
        ae = self._client(target, calling).add_scu(sopclass.qr_find_scu)
        with self._associate(ae, target, outcome) as assoc:
            for identifier, status in assoc.get_scu(UID(STUDY_ROOT.find))(keys, 1):
                outcome.statuses.append(int(status))
                if identifier is not None and status.is_pending:
                    outcome.identifiers.append(
                        {e.keyword: str(e.value) for e in identifier if e.keyword})
        return outcome

    def move(self, target: Target, calling: str, study_uid: str, listen_port: int) -> Outcome:
        from pynetdicom2 import applicationentity, sopclass, statuses

        outcome = Outcome(log="pynetdicom2 move")

        class Destination(applicationentity.AE):
            def on_receive_store(self, context: Any, ds: Any) -> Any:
                ds.seek(0)  # a temporary file: preamble, file meta, then the dataset
                outcome.received.append(
                    str(pydicom.dcmread(ds, stop_before_pixels=True).SOPInstanceUID))
                return statuses.SUCCESS

        server = Destination(calling, listen_port).add_scp(sopclass.storage_scp)
        keys = Dataset()
        keys.QueryRetrieveLevel = "STUDY"
        keys.StudyInstanceUID = study_uid
        with server:
            ae = self._client(target, calling).add_scu(sopclass.qr_move_scu)
            with self._associate(ae, target, outcome) as assoc:
                for status, _ in assoc.get_scu(UID(STUDY_ROOT.move))(keys, calling, 1):
                    outcome.statuses.append(int(status))
        return outcome

    def get(self, target: Target, calling: str, study_uid: str) -> Outcome:
        from pynetdicom2 import dimsemessages, sopclass, statuses

        outcome = Outcome(log="pynetdicom2 get")
        ae = self._client(target, calling)

        def on_receive_store(context: Any, ds: Any) -> Any:
            return statuses.SUCCESS

        ae.on_receive_store = on_receive_store
        ae.add_scu(sopclass.qr_get_scu)
        # The storage SOP classes it takes on the same association: SCP role, in its syntax.
        storage = [UID(u) for u in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4")]
        ae.supported_scp.update({u: sopclass.storage_scp for u in storage})
        ae.update_context_def_list(storage)
        keys = Dataset()
        keys.QueryRetrieveLevel = "STUDY"
        keys.StudyInstanceUID = study_uid
        with self._associate(ae, target, outcome) as assoc:
            # qr_get_scu yields each C-STORE sub-operation and swallows the final C-GET-RSP:
            # read the statuses off the association's messages as they are received.
            receive = assoc.receive

            def receive_and_record(*args: Any) -> Any:
                message, context_id = receive(*args)
                if isinstance(message, dimsemessages.CGetRSPMessage):
                    outcome.statuses.append(int(message.status))
                return message, context_id

            assoc.receive = receive_and_record
            for _, dataset in assoc.get_scu(UID(STUDY_ROOT.get))(keys, 1):
                outcome.received.append(str(dataset.SOPInstanceUID))
        return outcome

    def commit(self, target: Target, calling: str, transaction_uid: str,
               refs: list[tuple[str, str]], listen_port: int) -> Outcome:
        from pynetdicom2 import applicationentity, sopclass

        outcome = Outcome(log="pynetdicom2 commit")
        reports: queue.Queue[Report] = queue.Queue()
        event_types: list[int] = []

        class Commitment(sopclass.StorageCommitment):
            """pynetdicom2's own N-EVENT-REPORT handling, noting the Event Type ID first.

            pynetdicom2 0.9.8 leaves Message ID Being Responded To out of its
            N-EVENT-REPORT-RSP (a mandatory field; the adapter, rightly, takes such a response
            as no answer and sends the report again): it is filled in on the way out.
            """

            @staticmethod
            def n_event_report(asce: Any, ctx: Any, msg: Any) -> None:
                event_types.append(int(msg.event_type_id))
                send = asce.send

                def send_answered(response: Any, context_id: int) -> None:
                    response.message_id_being_responded_to = msg.message_id
                    send(response, context_id)

                asce.send = send_answered
                try:
                    sopclass.StorageCommitment.n_event_report(asce, ctx, msg)
                finally:
                    asce.send = send

        class Requester(applicationentity.AE):
            def on_commitment_response(self, transaction: Any, success: Any,
                                       failure: Any) -> None:
                reports.put(Report(
                    event_types[-1], str(transaction), [str(i) for _, i in success],
                    {str(i): int(reason) for _, i, reason in failure}))

        server = Requester(calling, listen_port).add_scp(Commitment())
        with server:
            ae = self._client(target, calling).add_scu(sopclass.storage_commitment_scu)
            with self._associate(ae, target, outcome) as assoc:
                status = assoc.get_scu(UID(STORAGE_COMMITMENT_PUSH_MODEL))(
                    UID(transaction_uid), [(UID(c), UID(i)) for c, i in refs], 1)
                outcome.statuses.append(int(status))
            try:
                outcome.report = reports.get(timeout=20)
            except queue.Empty:
                outcome.log += ": no N-EVENT-REPORT within 20 s"
        return outcome
