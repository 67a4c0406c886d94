"""Unit tests of notification parsing and the action filter."""

from __future__ import annotations

import pytest

from common.dicom.reference import InstanceReference
from export_adapter.errors import NotificationError
from export_adapter.notification import (
    NotifiedInstance,
    parse_instance_path,
    parse_notification,
    skip_reason_for,
)

STORE = "projects/p/locations/us/datasets/d/dicomStores/s/dicomWeb"
PATH = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
REFERENCE = InstanceReference(study_uid="1.2.3", series_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5")


def test_cloud_healthcare_resource_name() -> None:
    note = parse_notification(
        "m1",
        f"{STORE}/{PATH}".encode(),
        {"action": "StoreInstances", "storeName": STORE[: -len("/dicomWeb")]},
    )
    assert note.instance == NotifiedInstance(REFERENCE, STORE)
    assert note.action == "StoreInstances"
    assert not note.skip_reason
    assert note.instance.dicomweb_segments == (
        "studies", "1.2.3", "series", "1.2.3.4", "instances", "1.2.3.4.5"
    )  # fmt: skip
    assert "/".join(note.instance.resource_segments) == f"{STORE}/{PATH}"


@pytest.mark.parametrize("data", [f"/{PATH}", PATH, f"  /{PATH}/\n"])
def test_bare_path(data: str) -> None:
    note = parse_notification("m2", data.encode(), {})
    assert note.instance == NotifiedInstance(REFERENCE, "")


@pytest.mark.parametrize("action", ["StoreInstances", "ImportDicomData", "storeinstances", ""])
def test_exported_actions(action: str) -> None:
    assert skip_reason_for({"action": action} if action else {}) == ""


@pytest.mark.parametrize(
    "action", ["DeleteInstances", "UpdateInstances", "SetBlobSettings", "DeleteStudy"]
)
def test_other_actions_are_skipped(action: str) -> None:
    # Skipped even when the data is not an instance path: nothing is fetched.
    note = parse_notification("m3", b"projects/p/whatever", {"action": action})
    assert note.instance is None
    assert action in note.skip_reason


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"\xff\xfe",
        b"hello",
        b"/studies/1.2.3",
        b"/studies/1.2.3/series/1.2.3.4",
        b"/studies/1.2.3/series/1.2.3.4/instances/",
        b"/studies/1.2.3/series/1.2.3.4/frames/1/instances/5",
        b"/studies/1.2.x/series/1.2.3.4/instances/1.2.3.4.5",
        b"/studies/1.2.3/series/1.2.3.4/instances/" + b"1." * 40 + b"1",
        b"../../studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
        b"a//b/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
        b"x" * 5000,
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(NotificationError):
        parse_notification("m4", data, {"action": "StoreInstances"})


def test_uid_attributes_must_agree() -> None:
    data = f"/{PATH}".encode()
    parse_notification("m5", data, {"studyInstanceUID": "1.2.3", "sopInstanceUID": "1.2.3.4.5"})
    with pytest.raises(NotificationError, match="studyInstanceUID"):
        parse_notification("m6", data, {"studyInstanceUID": "9.9"})


def test_parse_does_not_mutate_attributes() -> None:
    attributes = {"action": "StoreInstances"}
    parse_notification("m7", f"/{PATH}".encode(), attributes)
    assert attributes == {"action": "StoreInstances"}


def test_segment_names_are_case_insensitive() -> None:
    ref = parse_instance_path("/Studies/1.2/Series/1.3/Instances/1.4").reference
    assert (ref.study_uid, ref.series_uid, ref.sop_instance_uid) == ("1.2", "1.3", "1.4")
