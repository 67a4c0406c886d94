"""Uploading one spooled file to one destination: STOW-RS or C-STORE.

An :class:`Uploader` belongs to one worker thread (DIMSE senders are not thread-safe). It never
retries by itself: the queue decides (see :mod:`import_adapter.spool.outcome`).

A STOW-RS that ended unanswered (connection error or timeout) may still have stored the
instance, and the queue's later try of the entry (from any worker) then gets 409. The
uploaders of one destination share an :class:`UnconfirmedStores`: an instance listed there
that meets a 409 is looked up with QIDO-RS, and is DONE when the store has it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from common.dicom.part10 import Part10Instance
from common.dicom.scan import scan_dataset
from common.dicomweb.client import DicomwebApi, stored_after_conflict
from common.dimse.fast.meta import read_file_meta
from common.dimse.sender import SenderSettings, StoreSender
from common.errors import (
    AdapterError,
    DicomwebConnectionError,
    DicomwebHttpError,
    DicomwebResponseError,
    DicomwebTimeoutError,
)
from common.status import SUCCESS, is_duplicate_store_status, rule_for_error
from import_adapter.routing.destinations import DimseDestination
from import_adapter.spool.layout import entry_calling_aet
from import_adapter.spool.outcome import Kind, UploadResult, result_for_error, result_for_status

LOG = logging.getLogger(__name__)
_HTTP_CONFLICT = 409
_HTTP_NOT_FOUND = 404


class Uploader(Protocol):
    """Sends spooled files to one destination (one instance per worker thread)."""

    def upload(self, path: Path, *, maybe_stored: bool = False) -> UploadResult:
        """Send one spooled Part 10 file; never raises for a failed upload.

        ``maybe_stored``: the destination may hold this very instance already (a file found in
        the spool at start, whose upload may have been under way when the process stopped), so
        a refusal because it exists is checked before it counts as a conflict.
        """
        ...

    def upload_batch(self, paths: Sequence[Path]) -> list[UploadResult | None]:
        """Send several spooled files (one request where the protocol allows).

        One result per file, in order; None: send that file again alone (the destination
        refused it within the batch, or the batch as a whole, without saying why for it alone).
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def spooled_instance(path: Path) -> Part10Instance:
    """Describe a spooled file for STOW-RS, with file meta rebuilt from its own.

    The meta is read by the project's one Part 10 meta reader (no pydicom dataset for three
    UIDs); the source AE title comes from the entry name (:func:`entry_calling_aet`).

    Raises:
        MalformedDatasetError: the file is gone, or has no usable file meta.
    """
    meta = read_file_meta(path)
    return Part10Instance.from_spooled(
        path,
        sop_class_uid=meta.sop_class_uid,
        sop_instance_uid=meta.sop_instance_uid,
        transfer_syntax_uid=meta.transfer_syntax_uid,
        source_aet=entry_calling_aet(path.name),
        offset=meta.dataset_offset,
    )


class UnconfirmedStores:
    """SOP Instance UIDs whose last STOW-RS to one destination ended unanswered.

    The store may have them already, so a 409 for one is looked up before it counts as a
    conflict. Thread-safe; bounded (the oldest are forgotten first: an entry given up on
    without a verdict is never settled).
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._uids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, sop_instance_uid: str) -> None:
        """Remember an instance whose upload ended unanswered."""
        with self._lock:
            self._uids[sop_instance_uid] = None
            self._uids.move_to_end(sop_instance_uid)
            while len(self._uids) > self._limit:
                self._uids.popitem(last=False)

    def discard(self, sop_instance_uid: str) -> None:
        """Forget an instance whose upload got a verdict (stored, or refused for good)."""
        with self._lock:
            self._uids.pop(sop_instance_uid, None)

    def __contains__(self, sop_instance_uid: object) -> bool:
        with self._lock:
            return sop_instance_uid in self._uids

    def __len__(self) -> int:
        with self._lock:
            return len(self._uids)


def _may_have_stored(error: BaseException) -> bool:
    """Whether the store may hold what a failed STOW-RS carried.

    Unanswered (a try that failed before sending counts too), a 2xx we cannot read, or an HTTP
    error to a request the transport had sent again: the store may have acted on it.
    """
    return isinstance(
        error, DicomwebConnectionError | DicomwebTimeoutError | DicomwebResponseError
    ) or (isinstance(error, DicomwebHttpError) and error.resent)


class StowUploader:
    """STOW-RS with an optional DELETE-and-store-again on conflict (``--stow_overwrite``).

    A 409 (or 0x0111) for an instance whose last upload through the same client ended
    unanswered (``unconfirmed``, shared by the destination's uploaders) is first
    looked up with QIDO-RS: the store has it -> DONE, neither dead-lettered nor overwritten.
    """

    def __init__(
        self,
        client: DicomwebApi,
        *,
        overwrite: bool,
        retry_codes: frozenset[int],
        unconfirmed: UnconfirmedStores | None = None,
    ) -> None:
        self._client = client
        self._overwrite = overwrite
        self._retry_codes = retry_codes
        # Shared by the destination's uploaders (the spool's wiring passes one per destination).
        self._unconfirmed = unconfirmed if unconfirmed is not None else UnconfirmedStores()

    def upload(self, path: Path, *, maybe_stored: bool = False) -> UploadResult:
        """STOW-RS the file; on 409 (or 0x0111) delete and store again when overwriting."""
        try:
            instance = spooled_instance(path)
        except (AdapterError, OSError) as exc:
            return result_for_error(exc, self._retry_codes)
        if maybe_stored:  # as if its last upload had ended unanswered (it may have, in a
            self._unconfirmed.add(instance.sop_instance_uid)  # process that stopped since)
        result = self._upload(instance)
        if result.kind in (Kind.DONE, Kind.DEAD):
            self._unconfirmed.discard(instance.sop_instance_uid)
        return result

    def upload_batch(self, paths: Sequence[Path]) -> list[UploadResult | None]:
        """STOW-RS the files in one request; each instance's result read from the answer.

        Only what the answer settles is returned: stored instances are DONE; an answer about
        the request as a whole that is about the destination (no answer, or an outcome the
        failure table calls transient: overload, 5xx, credentials, an unreadable 2xx) applies to
        every instance.
        An instance refused in the batch, or a batch refused as a whole (a 4xx, 501), is None:
        sent again alone, its own answer decides (with the 409 check and ``--stow_overwrite``
        of :meth:`upload`).
        """
        results: list[UploadResult | None] = [None] * len(paths)
        batch: list[tuple[int, Part10Instance]] = []
        for index, path in enumerate(paths):
            try:
                batch.append((index, spooled_instance(path)))
            except (AdapterError, OSError) as exc:
                results[index] = result_for_error(exc, self._retry_codes)
        if not batch:
            return results
        instances = [instance for _, instance in batch]
        try:
            stored = self._client.store_batch(instances)
        except (AdapterError, OSError) as exc:
            if _may_have_stored(exc):  # then a 409 for any of them is looked up
                for instance in instances:
                    self._unconfirmed.add(instance.sop_instance_uid)
            if isinstance(exc, DicomwebConnectionError | DicomwebTimeoutError):
                return _apply(results, batch, result_for_error(exc, self._retry_codes))
            if rule_for_error(exc).transient:
                # The store's state (5xx, 429/503, credentials, an answer we cannot read):
                # the same for every instance, retried as a batch.
                return _apply(results, batch, result_for_error(exc, self._retry_codes))
            return results  # a 4xx or 501: each is asked again alone
        for (index, instance), outcome in zip(batch, stored, strict=True):
            result = result_for_status(outcome.status, outcome.http_status)
            if result.kind is Kind.DONE:
                self._unconfirmed.discard(instance.sop_instance_uid)
                results[index] = result
        return results

    def _upload(self, instance: Part10Instance) -> UploadResult:
        result = self._store(instance)
        if not _is_conflict(result):
            return result
        uid = instance.sop_instance_uid
        if uid in self._unconfirmed and stored_after_conflict(self._client, uid):
            return UploadResult(Kind.DONE, SUCCESS, http_status=result.http_status)
        if not self._overwrite:
            return UploadResult(
                Kind.DEAD, result.status,
                "instance already exists at the destination (409) and --stow_overwrite is off",
                result.http_status,
            )
        LOG.info("conflict storing %s: deleting it and storing again", instance.sop_instance_uid)
        deleted = self._delete(instance)
        if deleted is not None:
            return deleted
        again = self._store(instance)
        if _is_conflict(again):
            return UploadResult(
                Kind.DEAD, again.status, "conflict persists after DELETE", again.http_status
            )
        return again

    def _store(self, instance: Part10Instance) -> UploadResult:
        try:
            stored = self._client.store(instance)
        except (AdapterError, OSError) as exc:
            if _may_have_stored(exc):
                self._unconfirmed.add(instance.sop_instance_uid)
            return result_for_error(exc, self._retry_codes)
        return result_for_status(stored.status, stored.http_status)

    def _delete(self, instance: Part10Instance) -> UploadResult | None:
        """DELETE the instance; None when it is gone (or was never there)."""
        try:
            with instance.open_dataset() as fp:
                summary = scan_dataset(fp, instance.dataset_length, instance.transfer_syntax_uid)
            self._client.delete((
                "studies", summary.study_instance_uid,
                "series", summary.series_instance_uid,
                "instances", instance.sop_instance_uid,
            ))
        except DicomwebHttpError as exc:
            if exc.status == _HTTP_NOT_FOUND:
                return None
            return result_for_error(exc, self._retry_codes)
        except (AdapterError, OSError) as exc:
            return result_for_error(exc, self._retry_codes)
        return None

    def close(self) -> None:
        """Nothing to release: the HTTP transport is shared and closed by the adapter."""


def _apply(
    results: list[UploadResult | None],
    batch: Sequence[tuple[int, Part10Instance]],
    whole: UploadResult,
) -> list[UploadResult | None]:
    """``results`` with ``whole`` for every instance that was in the request."""
    for index, _ in batch:
        results[index] = whole
    return results


def _is_conflict(result: UploadResult) -> bool:
    """A refusal because the instance exists (not a 409 the client found to be our own copy)."""
    return result.kind is not Kind.DONE and (
        result.http_status == _HTTP_CONFLICT
        or (result.kind is Kind.DEAD and is_duplicate_store_status(result.status))
    )


class CStoreUploader:
    """C-STORE over this worker's own association to a DIMSE destination."""

    def __init__(self, destination: DimseDestination, settings: SenderSettings) -> None:
        self._sender = StoreSender(destination.peer, settings)

    def upload(self, path: Path, *, maybe_stored: bool = False) -> UploadResult:
        """C-STORE the file (converted if the peer refuses its transfer syntax).

        ``maybe_stored`` changes nothing here: a DIMSE peer answers a C-STORE of an instance it
        holds itself (most store it again or answer a warning).
        """
        try:
            status = self._sender.send(path)
        except (AdapterError, OSError) as exc:
            return result_for_error(exc, frozenset())
        return result_for_status(status)

    def upload_batch(self, paths: Sequence[Path]) -> list[UploadResult | None]:
        """C-STORE the files one after the other (DIMSE has no batches)."""
        return [self.upload(path) for path in paths]

    def close(self) -> None:
        """Release the association."""
        try:
            self._sender.close()
        except Exception:  # closing must not fail the shutdown
            LOG.debug("closing association to %s failed", self._sender.peer, exc_info=True)
