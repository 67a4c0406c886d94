"""Helpers shared by the store-and-forward tests: a recording C-STORE SCU, store lookups."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config

from import_adapter.spool.disk import SpoolLimits
from import_adapter.spool.manager import SpoolSettings
from import_adapter.spool.queue import UploadSettings
from tests.support.adapters import IMPORT_AET
from tests.support.orthanc import OrthancServer

FAST_UPLOADS = UploadSettings(min_delay=0.05, max_delay=0.5, retry_amount=3, rescan_interval=0.2)


def spool_settings(directory: Path, *, auto_ack: bool = True, **upload: object) -> SpoolSettings:
    """Spool settings for tests: short delays, no free-disk floor."""
    return SpoolSettings(
        directory=directory,
        auto_ack=auto_ack,
        limits=SpoolLimits(min_free_bytes=0),
        upload=replace(FAST_UPLOADS, **upload),  # type: ignore[arg-type]
        sync_timeout=10.0,
    )


def send_files(
    port: int,
    paths: Sequence[Path],
    *,
    calling_aet: str = "PYSCU",
    results: dict[str, int] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """C-STORE files over one association; SOP Instance UID -> status of each answered one.

    Stops at the first unanswered request (association aborted: the adapter was killed).
    """
    _config.STORE_SEND_CHUNKED_DATASET = True
    results = {} if results is None else results
    metas = {path: read_file_meta_info(path) for path in paths}
    ae = AE(ae_title=calling_aet)
    for pair in dict.fromkeys(
        (str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas.values()
    ):
        ae.add_requested_context(pair[0], [pair[1]])
    assoc = ae.associate("127.0.0.1", port, ae_title=IMPORT_AET)
    if not assoc.is_established:
        return results
    try:
        for path in paths:
            if stop is not None and stop.is_set():
                break
            try:
                response = assoc.send_c_store(path)
            except (RuntimeError, OSError, ValueError):
                break
            if response is None or "Status" not in response:
                break
            results[str(metas[path].MediaStorageSOPInstanceUID)] = int(response.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def stored_uids(store: OrthancServer) -> set[str]:
    """SOP Instance UIDs of every instance in an Orthanc."""
    response = store.session.post(
        f"{store.http_url}/tools/find",
        json={"Level": "Instance", "Query": {}, "Expand": True},
        timeout=30,
    )
    response.raise_for_status()
    return {item["MainDicomTags"]["SOPInstanceUID"] for item in response.json()}


def queued_files(spool: Path) -> list[Path]:
    """Entries still waiting in any upload queue."""
    return [p for p in (spool / "queues").rglob("*.dcm")]


def dead_letter_files(spool: Path) -> list[Path]:
    """Entries in dead-letter."""
    return [p for p in (spool / "dead-letter").rglob("*.dcm")]
