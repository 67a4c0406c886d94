"""WADO-RS retrieve of one instance into a file, streamed (constant memory, any syntax)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from common.dicom.part10 import Part10Instance
from common.dicomweb.client import DicomwebApi
from common.dimse.fast.meta import read_file_meta
from common.errors import DicomwebHttpError, MalformedDatasetError
from common.sinks import Origin
from export_adapter.errors import InstanceNotFoundError
from export_adapter.notification import NotifiedInstance
from export_adapter.source import SourceLocator

LOG = logging.getLogger(__name__)

#: HTTP statuses that say the instance is not (or no longer) in the source store.
GONE_STATUSES = frozenset({404, 410})


@dataclass(frozen=True)
class FetchedInstance:
    """A retrieved instance on disk, as the source sent it.

    Attributes:
        instance: the instance, as sinks take it: its ``dataset_path`` is the retrieved Part 10
            file, its UIDs and dataset offset come from that file's meta.
    """

    instance: Part10Instance

    @property
    def path(self) -> Path:
        """The retrieved Part 10 file."""
        return self.instance.dataset_path

    @property
    def size(self) -> int:
        """The retrieved file's size in bytes (its meta as the source wrote it, and the dataset)."""
        return self.instance.dataset_offset + self.instance.dataset_length

    @property
    def sop_instance_uid(self) -> str:
        """The instance's SOP Instance UID (from its file meta)."""
        return self.instance.sop_instance_uid

    @property
    def origin(self) -> Origin:
        """What a sink is told besides the instance: its file (no AE title: not DIMSE)."""
        return Origin(file=self.path)


class InstanceFetcher:
    """Fetches instances from the source store as Part 10 files (thread-safe)."""

    def __init__(self, client: DicomwebApi, locator: SourceLocator) -> None:
        self._client = client
        self._locator = locator

    def fetch(self, instance: NotifiedInstance, destination: Path) -> FetchedInstance:
        """Write ``instance`` to ``destination`` as received (no transcoding).

        Raises:
            InstanceNotFoundError: the store answered 404/410 or with no instance at all.
            MalformedDatasetError: the part is not a Part 10 file of the instance asked for.
            DicomwebError: the request failed (transient ones after the client's retries).
        """
        segments = self._locator.segments(instance)
        received = False
        extra = 0
        try:
            for part in self._client.retrieve(segments):
                if not received:
                    part.write_to(destination)
                    received = True
                else:  # a server should send one part for one instance; ignore the rest
                    extra += 1
                    part.drain()
        except DicomwebHttpError as exc:
            if exc.status in GONE_STATUSES:
                raise InstanceNotFoundError(
                    f"source has no instance {instance.sop_instance_uid} (HTTP {exc.status})"
                ) from exc
            raise
        if not received:
            raise InstanceNotFoundError(
                f"source answered with no part for instance {instance.sop_instance_uid}"
            )
        if extra:
            LOG.warning(
                "WADO-RS of instance %s returned %d extra parts; ignored",
                instance.sop_instance_uid,
                extra,
            )
        return describe_part10(destination, instance)


def describe_part10(path: Path, instance: NotifiedInstance) -> FetchedInstance:
    """Read the file meta of a retrieved file and check it is the instance asked for.

    Raises:
        MalformedDatasetError: no usable file meta, or it names another instance.
    """
    meta = read_file_meta(path)  # our reader: pydicom's builds a dataset for three UIDs
    if meta.sop_instance_uid != instance.sop_instance_uid:
        raise MalformedDatasetError(
            f"source returned instance {meta.sop_instance_uid} when asked for "
            f"{instance.sop_instance_uid}"
        )
    part10 = Part10Instance.from_spooled(
        path,
        sop_class_uid=meta.sop_class_uid,
        sop_instance_uid=meta.sop_instance_uid,
        transfer_syntax_uid=meta.transfer_syntax_uid,
        offset=meta.dataset_offset,
    )
    return FetchedInstance(part10)
