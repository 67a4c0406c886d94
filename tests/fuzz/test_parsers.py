"""Property-based fuzzing of every parser that sees outside bytes (hypothesis, CI-sized).

Each parser is fed generated input (random bytes, and mutations of valid input, which reach
deeper) and may only succeed or raise one of our own exception types; anything else is a bug.
Runs are derandomized (same examples every run) and bounded to a few seconds each.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from common.dicom.scan import scan_buffer
from common.dicomweb.multipart import boundary_of, iter_parts
from common.dicomweb.stow import stow_status
from common.dimse.aet_dictionary import parse_aet_dictionary
from common.dimse.fast.acse import (
    ProposedContext,
    RoleProposal,
    canonical_associate_rq,
    decode_associate_ac,
    decode_associate_rj,
    decode_associate_rq,
    encode_associate_rq,
)
from common.dimse.fast.commands import CommandSetError, CStoreRq, decode_command_set
from common.dimse.fast.notify import NEventReportRsp
from common.dimse.fast.transport import DimseProtocolError
from common.errors import AdapterError
from export_adapter.errors import NotificationError
from export_adapter.notification import parse_notification
from import_adapter.access import parse_access_policy
from import_adapter.query.model import MODELS
from import_adapter.query.translate import build_find_plan, dataset_from_json
from import_adapter.routing.config import parse_destination_config

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    report_multiple_bugs=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: What the engine's decoders may raise (the listener turns each into an A-ABORT).
ENGINE_ERRORS = (DimseProtocolError, CommandSetError)


def _mutate(seed: bytes, data: st.DataObject) -> bytes:
    """A valid input with a few bytes flipped, cut or inserted (reaches past the headers)."""
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        if not buf:
            break
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[pos:]
        else:
            buf[pos:pos] = data.draw(st.binary(max_size=8))
    return bytes(buf)


_RQ = encode_associate_rq(
    "SCU", "SCP",
    [ProposedContext(1, "1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")),
     ProposedContext(3, "1.2.840.10008.1.1", ("1.2.840.10008.1.2",))],
    16384,
)
_CMD = CStoreRq(message_id=7, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                sop_instance_uid="1.2.3.4.5", move_originator_aet="MOVER",
                move_originator_message_id=3).encode()


# -- the fast engine ------------------------------------------------------------------------

@FUZZ
@given(st.data())
def test_associate_rq_decoding(data: st.DataObject) -> None:
    raw = data.draw(st.one_of(st.binary(max_size=512), st.just(_RQ)))
    raw = _mutate(raw, data) if data.draw(st.booleans()) else raw
    with contextlib.suppress(*ENGINE_ERRORS):
        decode_associate_rq(raw)


@FUZZ
@given(st.data())
def test_associate_rq_made_canonical(data: st.DataObject) -> None:
    """Never raises, keeps the length (pynetdicom reads it in place of what was sent), is stable."""
    raw = data.draw(st.one_of(st.binary(max_size=512), st.just(_RQ)))
    raw = _mutate(raw, data) if data.draw(st.booleans()) else raw
    canonical = canonical_associate_rq(raw)
    assert len(canonical) == len(raw)
    assert canonical_associate_rq(canonical) == canonical


@FUZZ
@given(st.data())
def test_associate_ac_rj_decoding(data: st.DataObject) -> None:
    raw = _mutate(_RQ.replace(b"\x01", b"\x02", 1), data)
    contexts = [ProposedContext(1, "1.2.840.10008.1.1", ("1.2.840.10008.1.2",))]
    with contextlib.suppress(*ENGINE_ERRORS):
        decode_associate_ac(raw, contexts)
    with contextlib.suppress(*ENGINE_ERRORS):
        decode_associate_rj(data.draw(st.binary(max_size=16)))


_RQ_WITH_ROLES = encode_associate_rq(
    "SCP", "SCU",
    [ProposedContext(1, "1.2.840.10008.1.20.1", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"))],
    16384,
    {"1.2.840.10008.1.20.1": RoleProposal(scu=False, scp=True)},
)
_REPORT_RSP = NEventReportRsp(
    message_id_being_responded_to=1, status=0x0110, sop_class_uid="1.2.840.10008.1.20.1",
    sop_instance_uid="1.2.840.10008.1.20.1.1", event_type_id=2, error_comment="no",
).encode()


@FUZZ
@given(st.data())
def test_associate_ac_with_role_replies_decoding(data: st.DataObject) -> None:
    raw = _mutate(_RQ_WITH_ROLES.replace(b"\x01", b"\x02", 1), data)
    contexts = [ProposedContext(1, "1.2.840.10008.1.20.1", ("1.2.840.10008.1.2",))]
    with contextlib.suppress(*ENGINE_ERRORS):
        decode_associate_ac(raw, contexts)


@FUZZ
@given(st.data())
def test_n_event_report_response_decoding(data: st.DataObject) -> None:
    raw = (_mutate(_REPORT_RSP, data) if data.draw(st.booleans())
           else data.draw(st.binary(max_size=256)))
    with contextlib.suppress(*ENGINE_ERRORS):
        NEventReportRsp.from_command(decode_command_set(raw))


@FUZZ
@given(st.data())
def test_command_set_decoding(data: st.DataObject) -> None:
    raw = _mutate(_CMD, data) if data.draw(st.booleans()) else data.draw(st.binary(max_size=256))
    try:
        command = decode_command_set(raw)
        CStoreRq.from_command(command)
    except ENGINE_ERRORS:
        pass


# -- DICOM data -------------------------------------------------------------------------------

def _sample_dataset_bytes() -> bytes:
    ds = Dataset()
    ds.PatientName = "Doe^J"
    ds.StudyInstanceUID = "1.2.3"
    seq_item = Dataset()
    seq_item.CodeValue = "X"
    ds.ProcedureCodeSequence = [seq_item]
    ds.PixelData = b"\0" * 16
    ds["PixelData"].VR = "OB"
    from pydicom.filebase import DicomBytesIO

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    from pydicom.filewriter import write_dataset

    write_dataset(fp, ds)
    return fp.getvalue()


_DATASET = _sample_dataset_bytes()


@FUZZ
@given(st.data(), st.sampled_from(["1.2.840.10008.1.2.1", "1.2.840.10008.1.2",
                                   "1.2.840.10008.1.2.2"]))
def test_dataset_scanning(data: st.DataObject, syntax: str) -> None:
    raw = _mutate(_DATASET, data) if data.draw(st.booleans()) else data.draw(st.binary(max_size=300))
    with contextlib.suppress(AdapterError):
        scan_buffer(raw, 0, len(raw), syntax)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_TAGS = st.sampled_from(["00100010", "0020000D", "00080020", "00081030", "00400275",
                         "00280010", "7FE00010", "00100020", "ZZZZ", "0008"])
_VRS = st.sampled_from(["PN", "UI", "DA", "LO", "SQ", "US", "OB", "DS", "IS", "AT", "XX"])


@FUZZ
@given(st.dictionaries(_TAGS, st.fixed_dictionaries(
    {"vr": _VRS}, optional={"Value": _JSON, "InlineBinary": st.text(max_size=12),
                            "BulkDataURI": st.text(max_size=12)}), max_size=6))
def test_qido_json_to_dataset(item: dict[str, Any]) -> None:
    dataset_from_json(item)  # tolerant by design: it drops what it cannot read


@FUZZ
@given(st.data())
def test_dimse_identifier_to_qido(data: st.DataObject) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = data.draw(st.sampled_from(["PATIENT", "STUDY", "SERIES", "IMAGE",
                                                       "", "BOGUS"]))
    for keyword in data.draw(st.lists(st.sampled_from(
            ["PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
             "SOPInstanceUID", "StudyDate", "ModalitiesInStudy", "AccessionNumber",
             "StudyTime", "NumberOfStudyRelatedInstances"]), max_size=6, unique=True)):
        value = data.draw(st.text(alphabet="0123456789.*?-\\^ ABCz", max_size=20))
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError):
            continue
    model = data.draw(st.sampled_from(MODELS))
    with contextlib.suppress(AdapterError):
        build_find_plan(ds, model)


# -- DICOMweb responses -----------------------------------------------------------------------

_MULTIPART = (
    b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + b"A" * 40
    + b"\r\n--XyZ\r\nContent-Type: application/dicom\r\nContent-Length: 5\r\n\r\nBBBBB"
    + b"\r\n--XyZ--\r\n"
)


@FUZZ
@given(st.data())
def test_multipart_parsing(data: st.DataObject) -> None:
    body = _mutate(_MULTIPART, data) if data.draw(st.booleans()) else data.draw(
        st.binary(max_size=300))
    size = data.draw(st.integers(1, 64))
    chunks = iter([body[i:i + size] for i in range(0, len(body), size)])
    try:
        for part in iter_parts(chunks, "XyZ"):
            _ = part.content_type
            for _chunk in part.body:
                pass
    except AdapterError:
        pass


@FUZZ
@given(st.text(max_size=80))
def test_multipart_content_type(header: str) -> None:
    with contextlib.suppress(AdapterError):
        boundary_of(header)


@FUZZ
@given(st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode())),
       st.sampled_from(["application/dicom+json", "application/json", "text/html", ""]))
def test_stow_response(body: bytes, content_type: str) -> None:
    with contextlib.suppress(AdapterError):  # DicomwebResponseError: not a STOW answer
        stow_status(body, content_type, "1.2.3")


# -- Pub/Sub and configuration ----------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       st.dictionaries(st.sampled_from(["action", "StudyInstanceUID", "SeriesInstanceUID",
                                        "SOPInstanceUID", "other"]), st.text(max_size=20),
                       max_size=4))
def test_pubsub_notification(data: bytes, attributes: dict[str, str]) -> None:
    with contextlib.suppress(NotificationError):
        parse_notification("m1", data, attributes)


@FUZZ
@given(st.data())
def test_pubsub_notification_mutated_paths(data: st.DataObject) -> None:
    path = (b"projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/studies/1.2/series/"
            b"1.2.3/instances/1.2.3.4")
    with contextlib.suppress(NotificationError):
        parse_notification("m1", _mutate(path, data), {})


_ENTRY = st.fixed_dictionaries(
    {}, optional={"name": _JSON | st.text(max_size=18), "host": _JSON, "port": _JSON,
                  "tls": _JSON, "ca": _JSON, "cert": _JSON, "key": _JSON,
                  "verify_hostname": _JSON})


@FUZZ
@given(st.one_of(st.text(max_size=100), st.lists(_ENTRY, max_size=3).map(json.dumps),
                 _JSON.map(json.dumps)))
def test_aet_dictionary(text: str) -> None:
    with contextlib.suppress(AdapterError):
        parse_aet_dictionary(text, source="fuzz")


@FUZZ
@given(st.one_of(
    st.text(max_size=100),
    st.lists(st.fixed_dictionaries({}, optional={
        "filter": st.text(max_size=20) | _JSON, "dicomweb_destination": _JSON | st.text(),
        "dicom_destination": _ENTRY | _JSON}), max_size=3).map(json.dumps),
))
def test_destination_config(text: str) -> None:
    with contextlib.suppress(AdapterError):
        parse_destination_config(text, source="fuzz")


@FUZZ
@given(st.one_of(st.text(max_size=100), st.dictionaries(
    st.sampled_from(["store", "query", "retrieve", "commit", "x"]),
    st.fixed_dictionaries({}, optional={"enabled": _JSON, "calling_aets": _JSON,
                                        "networks": _JSON}) | _JSON, max_size=3).map(json.dumps)),
    st.one_of(st.none(), st.text(max_size=30)))
def test_access_policy(text: str, networks: str | None) -> None:
    with contextlib.suppress(AdapterError):
        parse_access_policy(text, allowed_networks=networks)
