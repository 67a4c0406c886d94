"""Reading a Pub/Sub message into the instance it is about (pure functions, no I/O).

Two message formats are understood:

- the Cloud Healthcare notification: ``data`` is the instance's resource name,
  ``projects/P/locations/L/datasets/D/dicomStores/S/dicomWeb/studies/A/series/B/instances/C``,
  and attributes such as ``action``, ``storeName``, ``studyInstanceUID``... may be present;
- a bare DICOMweb path, ``/studies/A/series/B/instances/C``.

Notifications whose ``action`` says something other than "an instance was stored or imported"
(a deletion, a metadata update, a blob setting...) are not exported: :func:`parse_notification`
returns them with a ``skip_reason`` instead of an instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.dicom.reference import InstanceReference, is_uid
from export_adapter.errors import NotificationError

#: ``action`` values (compared case-insensitively) that announce a new instance to export.
EXPORT_ACTIONS = frozenset({"storeinstances", "importdicomdata"})
#: Attributes that repeat the instance's UIDs; when present they must agree with the data.
_UID_ATTRIBUTES = {
    "studyInstanceUID": "study_uid",
    "seriesInstanceUID": "series_uid",
    "sopInstanceUID": "sop_instance_uid",
}
#: The longest message data we read as a resource name (a real one is under 400 bytes).
MAX_DATA_BYTES = 2048
_PREVIEW = 80


@dataclass(frozen=True)
class NotifiedInstance:
    """An instance named by a notification: which instance, and in which store.

    Attributes:
        reference: the instance's study, series and SOP instance UIDs.
        store_path: what came before ``studies/`` (the Cloud Healthcare store resource name
            ending in ``/dicomWeb``), or ``""`` for a bare path.
    """

    reference: InstanceReference
    store_path: str = ""

    @property
    def sop_instance_uid(self) -> str:
        """The instance's SOP Instance UID."""
        return self.reference.sop_instance_uid

    @property
    def dicomweb_segments(self) -> tuple[str, ...]:
        """The path below a DICOMweb root: ``("studies", A, "series", B, "instances", C)``."""
        return self.reference.dicomweb_segments

    @property
    def resource_segments(self) -> tuple[str, ...]:
        """The whole resource name as path segments (store path, then the DICOMweb path)."""
        prefix = tuple(self.store_path.split("/")) if self.store_path else ()
        return (*prefix, *self.dicomweb_segments)

    def __str__(self) -> str:
        return "/".join(self.resource_segments)


@dataclass(frozen=True)
class Notification:
    """A parsed message: the instance to export, or why the message is skipped.

    Attributes:
        message_id: the Pub/Sub message id (for logs).
        action: the ``action`` attribute, ``""`` when absent.
        instance: the instance to export; None when the notification is skipped.
        skip_reason: why it is skipped (``""`` when it is to be exported).
    """

    message_id: str
    action: str
    instance: NotifiedInstance | None
    skip_reason: str = ""


def skip_reason_for(attributes: Mapping[str, str]) -> str:
    """Why a notification with these attributes is not exported (``""``: export it).

    A message without an ``action`` attribute (a bare path, or an older notification) is
    taken to announce a stored instance.
    """
    action = attributes.get("action", "").strip()
    if not action or action.lower() in EXPORT_ACTIONS:
        return ""
    return f"action {action!r} is not a store or import of an instance"


def _check_uid(value: str, what: str) -> str:
    if not is_uid(value):
        raise NotificationError(f"{what} {value[:_PREVIEW]!r} is not a valid UID")
    return value


def _text_of(data: bytes) -> str:
    if not data.strip():
        raise NotificationError("message data is empty; expected an instance resource name")
    if len(data) > MAX_DATA_BYTES:
        raise NotificationError(f"message data is {len(data)} bytes; not a resource name")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise NotificationError("message data is not UTF-8 text") from exc


def parse_instance_path(text: str) -> NotifiedInstance:
    """The instance named by a resource name or bare ``studies/A/series/B/instances/C`` path.

    Raises:
        NotificationError: the text does not end in a well-formed instance path.
    """
    segments = text.strip().strip("/").split("/")
    preview = text[:_PREVIEW]
    if len(segments) < 6 or [s.lower() for s in segments[-6::2]] != [
        "studies", "series", "instances"
    ]:  # fmt: skip
        raise NotificationError(
            f"{preview!r} is not an instance path (.../studies/A/series/B/instances/C)"
        )
    prefix = segments[:-6]
    if any(not part or part in (".", "..") or "?" in part or "#" in part for part in prefix):
        raise NotificationError(f"{preview!r} has an invalid resource name before 'studies'")
    reference = InstanceReference(
        study_uid=_check_uid(segments[-5], "study UID"),
        series_uid=_check_uid(segments[-3], "series UID"),
        sop_instance_uid=_check_uid(segments[-1], "instance UID"),
    )
    return NotifiedInstance(reference, store_path="/".join(prefix))


def parse_notification(
    message_id: str, data: bytes, attributes: Mapping[str, str]
) -> Notification:
    """Read one Pub/Sub message.

    Raises:
        NotificationError: the message should name an instance and does not (permanent).
    """
    action = attributes.get("action", "").strip()
    reason = skip_reason_for(attributes)
    if reason:
        return Notification(message_id, action, None, reason)
    instance = parse_instance_path(_text_of(data))
    for attribute, field_name in _UID_ATTRIBUTES.items():
        given = attributes.get(attribute, "").strip()
        if given and given != getattr(instance.reference, field_name):
            raise NotificationError(f"attribute {attribute} disagrees with the message data")
    return Notification(message_id, action, instance)
