"""Unit tests of STOW-RS response interpretation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from common.dicomweb.stow import stow_status
from common.errors import DicomwebResponseError
from common.status import Status

UID = "1.2.3.4"

#: A DICOM JSON object: tag -> {"vr": ..., "Value": [...]}.
JsonDataset = dict[str, dict[str, Any]]


def _ref(uid: str = UID, warning: int | None = None) -> JsonDataset:
    item: JsonDataset = {"00081155": {"vr": "UI", "Value": [uid]}, "00081150": {"vr": "UI", "Value": ["1.2"]}}
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [warning]}
    return item


def _body(referenced: Sequence[JsonDataset] = (), failed: Sequence[JsonDataset] = ()) -> bytes:
    data: JsonDataset = {"00081190": {"vr": "UR", "Value": ["http://x/studies/1"]}}
    if referenced:
        data["00081199"] = {"vr": "SQ", "Value": list(referenced)}
    if failed:
        data["00081198"] = {"vr": "SQ", "Value": list(failed)}
    return json.dumps(data).encode()


def test_referenced_is_success() -> None:
    assert stow_status(_body([_ref()]), "application/dicom+json", UID).code == Status.SUCCESS


def test_warning_reason_becomes_warning() -> None:
    status = stow_status(_body([_ref(warning=0xB000)]), "application/dicom+json", UID)
    assert status.code == 0xB000 and status.is_warning


def test_failure_reason_passes_through() -> None:
    failed: JsonDataset = {
        "00081155": {"vr": "UI", "Value": [UID]}, "00081197": {"vr": "US", "Value": [0xA900]}
    }
    status = stow_status(_body(failed=[failed]), "application/dicom+json", UID)
    assert status.code == 0xA900 and status.is_failure


def test_unknown_failure_reason_is_processing_failure() -> None:
    failed: JsonDataset = {
        "00081155": {"vr": "UI", "Value": [UID]}, "00081197": {"vr": "US", "Value": [42]}
    }
    status = stow_status(_body(failed=[failed]), "application/dicom+json", UID)
    assert status.code == Status.PROCESSING_FAILURE


def test_other_instance_only_is_not_success() -> None:
    status = stow_status(_body([_ref("9.9.9")]), "application/dicom+json", UID)
    assert status.code == Status.PROCESSING_FAILURE


def test_empty_body_is_success() -> None:
    assert stow_status(b"", "", UID).is_success


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b'"text"'])
def test_bad_json(body: bytes) -> None:
    with pytest.raises(DicomwebResponseError):
        stow_status(body, "application/dicom+json", UID)


def test_xml_cannot_confirm() -> None:
    with pytest.raises(DicomwebResponseError):
        stow_status(b"<NativeDicomModel/>", "application/dicom+xml", UID)
