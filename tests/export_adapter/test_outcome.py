"""Unit tests of the one table deciding ack (permanent) or nack (transient)."""

from __future__ import annotations

import pytest

from common.errors import (
    AssociationRejectedError,
    AuthError,
    DicomwebConnectionError,
    DicomwebHttpError,
    DicomwebResponseError,
    DicomwebTimeoutError,
    MalformedDatasetError,
    NoAcceptableContextError,
    PeerUnavailableError,
    ShuttingDownError,
    TranscodeError,
)
from common.status import DimseStatus
from export_adapter.errors import (
    InstanceNotFoundError,
    NotificationError,
    PeerRefusedInstanceError,
)
from export_adapter.outcome import classify, is_transient_status


@pytest.mark.parametrize(
    "error",
    [
        NotificationError("bad"),
        InstanceNotFoundError("gone"),
        PeerRefusedInstanceError(DimseStatus(0xC000), "P"),
        PeerRefusedInstanceError(DimseStatus(0xA900), "P"),
        PeerRefusedInstanceError(DimseStatus(0x0110), "P"),
        MalformedDatasetError("no meta"),
        TranscodeError("no codec"),
        NoAcceptableContextError("P accepted no context for 1.2", sop_class_uid="1.2"),
        DicomwebHttpError(400),
        DicomwebHttpError(406),
        DicomwebHttpError(409),
    ],
)
def test_permanent(error: BaseException) -> None:
    assert classify(error).permanent


@pytest.mark.parametrize(
    "error",
    [
        PeerUnavailableError("down"),
        AssociationRejectedError("P rejected the association", permanent=False, source=1, reason=1),
        PeerRefusedInstanceError(DimseStatus(0xA700), "P"),
        PeerRefusedInstanceError(DimseStatus(0xA7FF), "P"),
        DicomwebConnectionError("refused"),
        DicomwebTimeoutError("slow"),
        DicomwebHttpError(401),
        DicomwebHttpError(403),
        DicomwebHttpError(429),
        DicomwebHttpError(500),
        DicomwebHttpError(501),
        DicomwebHttpError(503),
        DicomwebResponseError("truncated"),
        AuthError("no credentials"),
        ShuttingDownError("bye"),
        RuntimeError("a bug"),
    ],
)
def test_transient(error: BaseException) -> None:
    assert not classify(error).permanent


def test_out_of_resources_is_the_transient_status_family() -> None:
    assert is_transient_status(DimseStatus(0xA701))
    assert not is_transient_status(DimseStatus(0xA900))
