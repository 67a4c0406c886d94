"""Peer input on the wire of a real import adapter process, whatever the requestor proposes.

- Hostile AE titles (line feeds, carriage returns, NUL, ESC, DEL, C1 controls) in a hand-built
  A-ASSOCIATE-RQ, and a hostile SOP Class UID in a C-FIND-RQ: with ``--log_format text`` every
  line of the adapter's output is one printable record, with ``--log_format json`` every line
  parses as a JSON object whose strings are printable, and the text a peer forged never starts
  a line; the Error Comment sent back carries no raw peer bytes.
- A called AE title padded with NUL bytes instead of spaces (as pynetdicom2 sends it) is the
  title it spells (with or without Storage Commitment proposed too): echo and store work;
  another NUL-padded title is rejected.
- A requestor proposing implicit then explicit VR little endian gets explicit (with or without
  Storage Commitment proposed), and a private element's VR survives to Orthanc (implicit VR
  would make it UN);
  a first choice that is compressed is kept.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    SecondaryCaptureImageStorage,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from common.dimse.fast.acse import (
    ProposedContext,
    decode_associate_ac,
    decode_associate_rj,
    encode_associate_rq,
)
from common.dimse.fast.commands import CEchoRq, CFindRq, CommandSet, CStoreRq, decode_command_set
from common.dimse.fast.constants import PduType, PdvControl, RejectReason, Tag
from common.dimse.fast.transport import pdata_pdus, release_pdu
from common.logs import CONTINUATION
from common.status import Status
from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.orthanc import OrthancServer
from tests.support.raw_pdu import read_pdu

LOCALHOST = "127.0.0.1"
SECONDARY_CAPTURE = str(SecondaryCaptureImageStorage)
VERIFICATION = str(Verification)
COMMITMENT = str(StorageCommitmentPushModel)
STUDY_FIND = str(StudyRootQueryRetrieveInformationModelFind)
EXPLICIT, IMPLICIT = str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)
#: What the requestor proposes: storage and queries, or the same with Storage Commitment (both
#: served by the adapter's one engine; before issue 16 the second went to pynetdicom).
PROPOSALS = ["storage", "commitment"]
LOG_FORMATS = ["text", "json"]

#: Storage, verification and C-FIND.
FAST_CONTEXTS = [
    ProposedContext(1, SECONDARY_CAPTURE, (EXPLICIT,)),
    ProposedContext(3, VERIFICATION, (EXPLICIT,)),
    ProposedContext(5, STUDY_FIND, (EXPLICIT,)),
]
#: The same with Storage Commitment.
COMMITMENT_CONTEXTS = [*FAST_CONTEXTS, ProposedContext(7, COMMITMENT, (IMPLICIT,))]

#: Text a peer tries to make into a log line of its own (16 bytes: a whole AE title field).
FORGED_TEXT = b"CRITICAL forged"
FORGED_JSON = b'{"severity":1} '
#: Called or calling AE title fields no requestor may log raw.
HOSTILE_TITLES = [
    b"\n" + FORGED_TEXT,
    b"\r\n" + FORGED_JSON[:14],
    b"\x00" + FORGED_JSON,
    b"\x1b[2J\x7f\x85\x00\nCRITICAL",
    b"IMPORTADAPTER\n\n\n",
]
FORGED_STARTS = (FORGED_TEXT.decode(), FORGED_JSON[:14].decode(), "CRITICAL")
_TEXT_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: "
)


@pytest.fixture(scope="module")
def adapters(
    orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AdapterProcess]]:
    """One adapter process per log format, both in front of the shared Orthanc."""
    with contextlib.ExitStack() as stack:
        started = {}
        for log_format in LOG_FORMATS:
            log = tmp_path_factory.mktemp(f"peer-input-{log_format}") / "adapter.log"
            started[log_format] = stack.enter_context(AdapterProcess(
                ["--dicomweb_address", orthanc.dicomweb_url, "--auth", "none",
                 "--acse_timeout", "5", "--log_format", log_format],
                log_path=log,
            ))
        yield started


# -- the raw wire -----------------------------------------------------------------------------


def _field(title: bytes) -> bytes:
    assert len(title) <= 16
    return title.ljust(16, b" ")


def _request(called: bytes, calling: bytes, contexts: list[ProposedContext]) -> bytes:
    """An A-ASSOCIATE-RQ with the AE title fields exactly as given (16 bytes each)."""
    pdu = encode_associate_rq("PLACEHOLDER", IMPORT_AET, contexts, 16384)
    called, calling = _field(called), _field(calling)
    return pdu[:10] + called + calling + pdu[42:]


def _connect(adapter: AdapterProcess, request: bytes) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((LOCALHOST, adapter.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(request)
    return sock, read_pdu(sock)


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _send(sock: socket.socket, context_id: int, command: bytes, dataset: bytes | None) -> None:
    pdus = pdata_pdus(context_id, command, True, 16000)
    if dataset is not None:
        pdus += pdata_pdus(context_id, dataset, False, 16000)
    sock.sendall(b"".join(pdus))


def _response(sock: socket.socket) -> tuple[CommandSet, bytes | None]:
    """The next response: its command set, and its dataset if it has one."""
    command, dataset = b"", b""
    done_command = False
    while True:
        pdu = read_pdu(sock)
        assert pdu[:1] == bytes([PduType.P_DATA_TF]), pdu[:10]
        offset = 6
        while offset < len(pdu):
            length = int.from_bytes(pdu[offset : offset + 4], "big")
            control, value = pdu[offset + 5], pdu[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if control & PdvControl.COMMAND:
                command += value
                done_command = bool(control & PdvControl.LAST_FRAGMENT)
                if done_command:
                    decoded = decode_command_set(command)
                    if not decoded.has_dataset:
                        return decoded, None
            else:
                dataset += value
                if control & PdvControl.LAST_FRAGMENT:
                    return decode_command_set(command), dataset


def _release(sock: socket.socket) -> None:
    sock.sendall(release_pdu(PduType.RELEASE_RQ))
    assert read_pdu(sock)[:1] == bytes([PduType.RELEASE_RP])
    sock.close()


def _served_by_pynetdicom(accept: bytes) -> bool:
    return PYNETDICOM_IMPLEMENTATION_UID.encode() in accept


def _sc_dataset(syntax: str | None = None, *, private: bool = True) -> Dataset:
    """A small Secondary Capture instance, with private elements of several VRs.

    ``syntax``: the transfer syntax its file meta names (pynetdicom's SCU sends it in that one).
    """
    ds = Dataset()
    if syntax is not None:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PEERINPUT"
    ds.PatientName = "Peer^Input"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    if private:
        block = ds.private_block(0x0009, "PEERINPUT TEST", create=True)
        block.add_new(0x01, "US", 1234)
        block.add_new(0x02, "DS", "3.5")
        block.add_new(0x03, "LO", "kept with its VR")
    return ds


# -- hostile input never reaches the log raw --------------------------------------------------


def _check_log(text: str, log_format: str, *, tracebacks: bool = False) -> list[str]:
    """Every line a record (text) or a JSON object (json); returns the messages.

    A record's traceback (``tracebacks``: pynetdicom logs some of its own errors with one)
    continues on lines that start with ``  | `` in the text format, and is the ``exception``
    field, lines kept, in JSON.
    """
    assert text.endswith("\n")
    messages = []
    for line in text[:-1].split("\n"):
        assert line.isprintable(), repr(line)
        assert not line.startswith(FORGED_STARTS), line
        if log_format == "text":
            if tracebacks and line.startswith(CONTINUATION):
                continue
            assert _TEXT_RECORD.match(line), repr(line)
            messages.append(line)
            continue
        record = json.loads(line)
        assert isinstance(record, dict) and {"severity", "message"} <= set(record), line
        exception = record.pop("exception", "")
        assert tracebacks or not exception, line
        assert all(part.isprintable() for part in exception.split("\n")), line
        assert all(value.isprintable() for value in record.values() if isinstance(value, str))
        messages.append(record["message"])
    return messages


@pytest.mark.parametrize("log_format", LOG_FORMATS)
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_hostile_ae_titles_never_forge_a_log_line(
    adapters: dict[str, AdapterProcess], log_format: str, proposal: str
) -> None:
    adapter = adapters[log_format]
    contexts = FAST_CONTEXTS if proposal == "storage" else COMMITMENT_CONTEXTS
    start = len(adapter.log_path.read_bytes()) if adapter.log_path.exists() else 0
    for title in HOSTILE_TITLES:
        for called, calling in ((title, b"CALLER"), (IMPORT_AET.encode(), title)):
            sock, answer = _connect(adapter, _request(called, calling, contexts))
            assert answer[:1] == bytes([PduType.ABORT]), answer[:10]
            _until_closed(sock)
            sock.close()
    # The adapter still serves.
    sock, accept = _connect(adapter, _request(IMPORT_AET.encode(), b"AFTERWARDS", contexts))
    assert accept[:1] == bytes([PduType.ASSOCIATE_AC])
    assert not _served_by_pynetdicom(accept)
    _release(sock)
    log = adapter.log_path.read_bytes()[start:].decode("utf-8")
    messages = _check_log(log, log_format)
    refused = [m for m in messages if "is not an AE title" in m]
    assert len(refused) == 2 * len(HOSTILE_TITLES), log
    # Named escaped: the peer's bytes are there to read, as escapes.
    assert any("\\nCRITICAL forged" in m for m in refused), refused
    assert any("\\x1b[2J\\x7f\\x85\\x00\\n" in m for m in refused), refused
    assert "Traceback" not in log


@pytest.mark.parametrize("log_format", LOG_FORMATS)
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_a_hostile_sop_class_uid_is_neither_logged_nor_answered_raw(
    adapters: dict[str, AdapterProcess], log_format: str, proposal: str
) -> None:
    """A C-FIND-RQ whose Affected SOP Class UID forges lines: logged escaped, answered safe."""
    adapter = adapters[log_format]
    contexts = FAST_CONTEXTS if proposal == "storage" else COMMITMENT_CONTEXTS
    start = len(adapter.log_path.read_bytes())
    sock, accept = _connect(adapter, _request(IMPORT_AET.encode(), b"FINDER", contexts))
    assert accept[:1] == bytes([PduType.ASSOCIATE_AC])
    assert not _served_by_pynetdicom(accept)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    hostile = "1.2.3\n" + FORGED_TEXT.decode() + "\r\x00\x1b\\"
    _send(sock, 5, CFindRq(1, hostile).encode(), encode(identifier, False, True))
    response, _ = _response(sock)
    assert response.us(Tag.STATUS) == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    comment = response.text(Tag.ERROR_COMMENT)
    assert comment.startswith("unsupported Query/Retrieve SOP class 1.2.3?CRITICAL forged")
    assert comment.isascii() and comment.isprintable() and "\\" not in comment, comment
    _release(sock)
    messages = _check_log(
        adapter.log_path.read_bytes()[start:].decode("utf-8"), log_format, tracebacks=True
    )
    assert any("1.2.3\\nCRITICAL forged\\r\\x00\\x1b" in m for m in messages), messages


# -- AE titles padded with NUL bytes ----------------------------------------------------------


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_a_nul_padded_called_ae_title_is_the_title_it_spells(
    adapters: dict[str, AdapterProcess], orthanc: OrthancServer, proposal: str
) -> None:
    adapter = adapters["text"]
    contexts = FAST_CONTEXTS if proposal == "storage" else COMMITMENT_CONTEXTS
    called = IMPORT_AET.encode().ljust(16, b"\0")
    calling = b"NULPADDED".ljust(16, b"\0")
    start = len(adapter.log_path.read_bytes())
    sock, accept = _connect(adapter, _request(called, calling, contexts))
    assert accept[:1] == bytes([PduType.ASSOCIATE_AC]), accept[:10]
    assert not _served_by_pynetdicom(accept)
    accepted = {cx.context_id: cx for cx in decode_associate_ac(accept, contexts).contexts}
    assert {1, 3} <= set(accepted)
    _send(sock, 3, CEchoRq(1).encode(), None)
    assert _response(sock)[0].us(Tag.STATUS) == 0
    ds = _sc_dataset(private=False)
    _send(sock, 1, CStoreRq(2, SECONDARY_CAPTURE, ds.SOPInstanceUID).encode(),
          encode(ds, False, True))
    assert _response(sock)[0].us(Tag.STATUS) == 0
    _release(sock)
    assert orthanc.qido("/instances", {"SOPInstanceUID": ds.SOPInstanceUID})
    log = adapter.log_path.read_bytes()[start:].decode("utf-8")
    assert "NULPADDED@127.0.0.1" in log, log
    assert "\\x00" not in log, log


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_a_nul_padded_other_title_is_still_rejected(
    adapters: dict[str, AdapterProcess], proposal: str
) -> None:
    contexts = FAST_CONTEXTS if proposal == "storage" else COMMITMENT_CONTEXTS
    called = b"NOTTHEADAPTER".ljust(16, b"\0")
    sock, answer = _connect(adapters["text"], _request(called, b"NULPADDED\0\0\0", contexts))
    sock.close()
    assert answer[:1] == bytes([PduType.ASSOCIATE_RJ]), answer[:10]
    assert decode_associate_rj(answer[6:]).reason == RejectReason.CALLED_AE_NOT_RECOGNIZED


# -- explicit VR preferred --------------------------------------------------------------------


def _pynetdicom_scu(proposal: str, syntaxes: list[str]) -> AE:
    ae = AE(ae_title="SYNTAXSCU")
    ae.add_requested_context(SecondaryCaptureImageStorage, syntaxes)
    ae.add_requested_context(Verification, [IMPLICIT, EXPLICIT])
    if proposal == "commitment":
        ae.add_requested_context(StorageCommitmentPushModel)
    return ae


def _stored(orthanc: OrthancServer, ds: Dataset) -> Dataset:
    data = orthanc.wado_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return pydicom.dcmread(BytesIO(data))


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_explicit_vr_is_preferred_and_private_vrs_reach_the_store(
    adapters: dict[str, AdapterProcess], orthanc: OrthancServer, proposal: str
) -> None:
    ae = _pynetdicom_scu(proposal, [IMPLICIT, EXPLICIT])
    assoc = ae.associate(LOCALHOST, adapters["text"].port, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        served_by_pynetdicom = assoc.acceptor.implementation_class_uid == (
            PYNETDICOM_IMPLEMENTATION_UID
        )
        assert not served_by_pynetdicom
        accepted = {str(cx.abstract_syntax): str(cx.transfer_syntax[0])
                    for cx in assoc.accepted_contexts}
        assert accepted[SECONDARY_CAPTURE] == EXPLICIT
        assert accepted[VERIFICATION] == EXPLICIT
        ds = _sc_dataset(EXPLICIT)
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    stored = _stored(orthanc, ds)
    assert stored.file_meta.TransferSyntaxUID == EXPLICIT
    assert [(stored[tag].VR, stored[tag].value) for tag in (0x00091001, 0x00091002, 0x00091003)] \
        == [("US", 1234), ("DS", 3.5), ("LO", "kept with its VR")]


def test_implicit_vr_alone_loses_the_private_vrs(
    adapters: dict[str, AdapterProcess], orthanc: OrthancServer
) -> None:
    """What the preference avoids: the same instance sent in implicit VR reaches the store as UN."""
    ae = _pynetdicom_scu("storage", [IMPLICIT])
    assoc = ae.associate(LOCALHOST, adapters["text"].port, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        ds = _sc_dataset(IMPLICIT)
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    stored = _stored(orthanc, ds)
    assert stored.file_meta.TransferSyntaxUID == IMPLICIT
    assert stored[0x00091001].VR == "UN"


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_a_compressed_first_choice_is_kept(
    adapters: dict[str, AdapterProcess], proposal: str
) -> None:
    ae = _pynetdicom_scu(proposal, [JPEGBaseline8Bit, IMPLICIT, EXPLICIT])
    assoc = ae.associate(LOCALHOST, adapters["text"].port, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax): str(cx.transfer_syntax[0])
                    for cx in assoc.accepted_contexts}
        assert accepted[SECONDARY_CAPTURE] == JPEGBaseline8Bit
    finally:
        assoc.release()
