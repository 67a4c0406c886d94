"""Reading a STOW-RS response (PS3.18 10.5.3) into the C-STORE status of one instance.

Pure functions over the response body, unit-tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from common.errors import DicomwebResponseError
from common.status import (
    SUCCESS,
    DimseStatus,
    Status,
    is_storage_failure_reason,
    is_storage_warning_reason,
)

_REFERENCED_SOP_SEQUENCE = "00081199"
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"


def _items(dataset: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = dataset.get(tag) or {}
    value = element.get("Value") if isinstance(element, dict) else None
    return [item for item in value or [] if isinstance(item, dict)]


def _first(dataset: dict[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    if isinstance(element, dict):
        value = element.get("Value")
        if isinstance(value, list) and value:
            return value[0]
    return None


def _reason(item: dict[str, Any], tag: str) -> int | None:
    value = _first(item, tag)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _matches(item: dict[str, Any], sop_instance_uid: str) -> bool:
    uid = _first(item, _REFERENCED_SOP_INSTANCE_UID)
    return uid is None or str(uid) == sop_instance_uid


def parse_stow_json(body: bytes) -> dict[str, Any]:
    """Decode a STOW-RS JSON response body (a single DICOM JSON dataset, or a list of one)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DicomwebResponseError(f"STOW-RS response is not JSON: {exc}") from exc
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise DicomwebResponseError("STOW-RS response is not a DICOM JSON dataset")
    return data


def stow_status(body: bytes, content_type: str, sop_instance_uid: str) -> DimseStatus:
    """The C-STORE status for ``sop_instance_uid`` given a 2xx STOW-RS response.

    - in FailedSOPSequence: failure, with its FailureReason when that is a storage failure code
      (else 0x0110 Processing Failure);
    - in ReferencedSOPSequence with a WarningReason: that warning (0xB000 when unrecognised);
    - in ReferencedSOPSequence: success;
    - an empty body: success (the server accepted the request and said nothing more);
    - a response that mentions other instances only: failure, the store did not confirm ours.
    """
    return stow_statuses(body, content_type, [sop_instance_uid])[0]


def stow_statuses(
    body: bytes, content_type: str, sop_instance_uids: Sequence[str]
) -> list[DimseStatus]:
    """:func:`stow_status` of each instance of a batched request, reading the body once."""
    if not body.strip():
        return [SUCCESS] * len(sop_instance_uids)
    if "xml" in content_type.lower():
        raise DicomwebResponseError(
            "STOW-RS response is XML although JSON was requested; cannot confirm storage"
        )
    data = parse_stow_json(body)
    failed = _items(data, _FAILED_SOP_SEQUENCE)
    referenced = _items(data, _REFERENCED_SOP_SEQUENCE)
    return [_status_of(data, failed, referenced, uid) for uid in sop_instance_uids]


def _status_of(
    data: dict[str, Any],
    failed: list[dict[str, Any]],
    referenced: list[dict[str, Any]],
    sop_instance_uid: str,
) -> DimseStatus:
    for item in failed:
        if _matches(item, sop_instance_uid):
            reason = _reason(item, _FAILURE_REASON)
            if reason is not None and is_storage_failure_reason(reason):
                return DimseStatus(reason, f"Store refused instance (0x{reason:04X})")
            detail = f" (reason {reason})" if reason is not None else ""
            return DimseStatus(Status.PROCESSING_FAILURE, f"Store refused instance{detail}")
    for item in referenced:
        if _matches(item, sop_instance_uid):
            warning = _reason(item, _WARNING_REASON)
            if warning is None:
                warning = _reason(data, _WARNING_REASON)
            if warning is None:
                return SUCCESS
            code = warning if is_storage_warning_reason(warning) else (
                Status.COERCION_OF_DATA_ELEMENTS
            )
            return DimseStatus(code, f"Store stored instance with warning 0x{warning:04X}")
    return DimseStatus(Status.PROCESSING_FAILURE, "Store did not confirm the instance")
