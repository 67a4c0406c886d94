"""An odil peer for the interoperability tests, run by Debian's /usr/bin/python3 (python3-odil).

Not imported by the test process: tests/support/peers/odil.py runs it as
``/usr/bin/python3 odil_peer.py JOB_JSON`` and reads the one JSON line it prints (the same
fields as dcmjs_peer.js). Echo, store and find go through odil's own DIMSE messages on its
association, so that every response status is seen; get uses odil's GetSCU, whose callbacks
see each response and each sub-operation. No C-MOVE: odil's MoveSCU binds its port for the
sub-operations only after it sent the C-MOVE-RQ, so an SCP that connects at once (the adapter
does) finds nothing listening.
The User Identity sub-item is odil's (username, or username and passcode; odil asks for no
response).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypedDict

import odil

#: The job the test process passes: host, port, AE titles, op and its arguments (JSON).
Job = dict[str, Any]


class Result(TypedDict):
    """The JSON line printed back (the same fields as dcmjs_peer.js)."""

    op: str
    statuses: list[dict[str, int]]
    datasets: list[dict[str, str]]
    received: list[str]
    errors: list[str]

PC = odil.AssociationParameters.PresentationContext
UNCOMPRESSED = [odil.registry.ExplicitVRLittleEndian, odil.registry.ImplicitVRLittleEndian]
STORAGE = [odil.registry.CTImageStorage, odil.registry.MRImageStorage]


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def associate(job: Job, contexts: list[Any]) -> Any:
    association = odil.Association()
    association.set_peer_host(job["host"])
    association.set_peer_port(job["port"])
    parameters = association.update_parameters()
    parameters.set_calling_ae_title(job["calling"])
    parameters.set_called_ae_title(job["called"])
    parameters.set_presentation_contexts(contexts)
    identity = job.get("user_identity")
    if identity and identity.get("secondary"):
        parameters.set_user_identity_to_username_and_password(
            identity["primary"], identity["secondary"])
    elif identity:
        parameters.set_user_identity_to_username(identity["primary"])
    association.associate()
    return association


def echo(job: Job, result: Result) -> None:
    association = associate(job, [PC(1, odil.registry.Verification, UNCOMPRESSED, PC.Role.SCU)])
    association.send_message(
        odil.messages.CEchoRequest(association.next_message_id(), odil.registry.Verification),
        odil.registry.Verification)
    response = odil.messages.CEchoResponse(association.receive_message())
    result["statuses"].append({"status": response.get_status()})
    association.release()


def store(job: Job, result: Result) -> None:
    data_sets = []
    for path in job["files"]:
        with odil.open(path) as stream:
            data_sets.append(odil.Reader.read_file(stream)[1])
    sop_classes = sorted({text(d.as_string("SOPClassUID")[0]) for d in data_sets})
    contexts = [PC(2 * i + 1, uid, [odil.registry.ExplicitVRLittleEndian], PC.Role.SCU)
                for i, uid in enumerate(sop_classes)]
    association = associate(job, contexts)
    for data_set in data_sets:
        sop_class = text(data_set.as_string("SOPClassUID")[0])
        request = odil.messages.CStoreRequest(
            association.next_message_id(), sop_class,
            text(data_set.as_string("SOPInstanceUID")[0]), 0, data_set)
        association.send_message(request, sop_class)
        response = odil.messages.CStoreResponse(association.receive_message())
        result["statuses"].append({"status": response.get_status()})
    association.release()


def find(job: Job, result: Result) -> None:
    model = odil.registry.StudyRootQueryRetrieveInformationModelFind
    association = associate(job, [PC(1, model, UNCOMPRESSED, PC.Role.SCU)])
    query = odil.DataSet()
    query.add("QueryRetrieveLevel", [b"STUDY"])
    query.add("StudyInstanceUID", [job["study"].encode()])
    for keyword in ("PatientID", "StudyDate"):
        query.add(keyword)
    association.send_message(
        odil.messages.CFindRequest(association.next_message_id(), model, 0, query), model)
    while True:
        response = odil.messages.CFindResponse(association.receive_message())
        result["statuses"].append({"status": response.get_status()})
        if response.has_data_set() and response.is_pending():
            identifier = response.get_data_set()
            result["datasets"].append({
                keyword: text(identifier.as_string(keyword)[0])
                if identifier.as_string(keyword) else ""
                for keyword in ("StudyInstanceUID", "PatientID")
                if keyword in identifier
            })
        if not response.is_pending():
            break
    association.release()


def study_query(study: str) -> Any:
    query = odil.DataSet()
    query.add("QueryRetrieveLevel", [b"STUDY"])
    query.add("StudyInstanceUID", [study.encode()])
    return query


def received(data_set: Any) -> str:
    return text(data_set.as_string("SOPInstanceUID")[0])


def record_response(result: Result) -> Callable[[Any], None]:
    def callback(response: Any) -> None:
        result["statuses"].append({"status": response.get_status()})
    return callback


def get(job: Job, result: Result) -> None:
    model = odil.registry.StudyRootQueryRetrieveInformationModelGet
    contexts = [PC(1, model, UNCOMPRESSED, PC.Role.SCU)]
    contexts += [PC(3 + 2 * i, uid, UNCOMPRESSED, PC.Role.SCP) for i, uid in enumerate(STORAGE)]
    association = associate(job, contexts)
    scu = odil.GetSCU(association)
    scu.set_affected_sop_class(model)
    scu.get(study_query(job["study"]),
            lambda data_set: result["received"].append(received(data_set)),
            record_response(result))
    association.release()


def main() -> None:
    job = json.loads(sys.argv[1])
    result: Result = {"op": job["op"], "statuses": [], "datasets": [], "received": [],
                      "errors": []}
    try:
        {"echo": echo, "store": store, "find": find, "get": get}[job["op"]](
            job, result)
    except Exception as exc:  # the test reads the error with what was seen before it
        result["errors"].append(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    print(json.dumps(result))


main()
