"""The DICOMweb client: STOW-RS, QIDO-RS (paged), WADO-RS (streamed), DELETE.

The client is defined by the :class:`DicomwebApi` protocol; :class:`DicomwebClient` implements
it over a shared :class:`~common.http.HttpTransport` and an :class:`~common.auth.Authenticator`,
both passed in. It retries transient failures by its :class:`~common.retry.RetryPolicy` and
re-authenticates once after a 401.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from common.auth import Authenticator
from common.breaker import BreakerRegistry, qido_probe
from common.dicom.part10 import Part10Instance
from common.dicomweb.address import DicomwebAddress, Query
from common.dicomweb.multipart import Part, boundary_of, iter_parts, stow_body
from common.dicomweb.stow import stow_statuses
from common.errors import (
    AdapterError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebResponseError,
    DicomwebTimeoutError,
)
from common.http import Body, Response, Transport, translate_stream_errors, was_resent
from common.retry import RetryPolicy, call_with_retry
from common.status import SUCCESS, DimseStatus, is_duplicate_store_status

LOG = logging.getLogger(__name__)
T = TypeVar("T")

DICOM_JSON = "application/dicom+json"
#: Accept header for a WADO-RS retrieve of instances in any transfer syntax (no transcoding).
ACCEPT_ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_STREAM_CHUNK = 256 * 1024
#: With parallel QIDO paging the first page asks for ``page_size // FIRST_PAGE_DIVISOR``.
FIRST_PAGE_DIVISOR = 4
_HTTP_CONFLICT = 409
#: Results of the QIDO-RS check for one SOP Instance UID looked at (one is expected).
_CHECK_RESULTS = 10
_SOP_INSTANCE_UID = "00080018"


@dataclass(frozen=True)
class StowResult:
    """The outcome of storing one instance: its C-STORE status and the HTTP status."""

    status: DimseStatus
    http_status: int


class DicomwebApi(Protocol):
    """What the adapters need from a DICOMweb server."""

    def store(self, instance: Part10Instance) -> StowResult:
        """STOW-RS one instance."""
        ...

    def store_batch(self, instances: Sequence[Part10Instance]) -> list[StowResult]:
        """STOW-RS several instances in one request; one result per instance, in order."""
        ...

    def search(
        self, resource: Sequence[str], query: Query, *, page_size: int = ..., parallel: int = ...
    ) -> Iterator[dict[str, Any]]:
        """QIDO-RS, yielding DICOM JSON results across all pages."""
        ...

    def retrieve(self, resource: Sequence[str], *, accept: str = ...) -> Iterator[Part]:
        """WADO-RS, yielding the parts of a multipart response as they arrive."""
        ...

    def delete(self, resource: Sequence[str]) -> None:
        """DELETE a study, series or instance."""
        ...


class DicomwebClient:
    """A DICOMweb client over a shared HTTP transport (thread-safe)."""

    def __init__(
        self,
        address: DicomwebAddress,
        transport: Transport,
        auth: Authenticator,
        retry: RetryPolicy,
        *,
        stow_transport: Transport | None = None,
        stop: threading.Event | None = None,
        on_retry: Callable[[DicomwebError], None] | None = None,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        """A client of the DICOMweb root ``address``.

        With ``breakers``, requests go through the circuit breaker of ``address``'s root, shared
        with every other client of that root made with the same registry: once the store is
        known down they raise :class:`~common.errors.StoreUnavailableError` at once (and are
        not retried); the breaker's probe uses ``transport`` and ``auth``.
        """
        self.address = address
        self._transport = transport
        # STOW-RS may use its own transport (HTTP/2, the reference adapter's --stow_http2).
        self._stow_transport = stow_transport or transport
        self._auth = auth
        self._retry = retry
        self._stop = stop
        self._on_retry = on_retry
        self._breaker = (
            None
            if breakers is None
            else breakers.breaker(
                address, qido_probe(address, transport, auth, breakers.settings.probe_timeout)
            )
        )

    def __repr__(self) -> str:
        return f"DicomwebClient({self.address})"

    # -- plumbing -----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body_factory: Callable[[], Body] | None = None,
        *,
        stream: bool = False,
        transport: Transport | None = None,
    ) -> Response:
        """One request with auth, re-authenticating once after a 401.

        Through the root's circuit breaker, if any: refused at once while the store is known
        down; an HTTP answer (any status) or a connection failure/timeout is reported to it.
        """
        transport = transport or self._transport
        breaker = self._breaker
        if breaker is not None:
            breaker.check()  # raises StoreUnavailableError: nothing is sent
        for attempt in (1, 2):
            body = body_factory() if body_factory else None  # may set Content-* headers
            request_headers = {**headers, **self._auth.headers()}
            try:
                response = transport.request(
                    method, url, headers=request_headers, body=body, stream=stream
                )
            except DicomwebHttpError as exc:
                if breaker is not None:
                    breaker.record_answer()
                if exc.status == 401 and attempt == 1:
                    LOG.info("DICOMweb server answered 401; refreshing credentials")
                    self._auth.invalidate()
                    continue
                raise
            except (DicomwebConnectionError, DicomwebTimeoutError) as exc:
                unavailable = None if breaker is None else breaker.record_failure(exc)
                if unavailable is not None:
                    raise unavailable from exc
                raise
            finally:
                close = getattr(body, "close", None)
                if callable(close):
                    close()
            if breaker is not None:
                breaker.record_answer()
            return response
        raise AssertionError("unreachable")

    def _with_retry(self, operation: Callable[[], T], describe: str) -> T:
        return call_with_retry(
            operation,
            self._retry,
            describe=describe,
            stop=self._stop,
            on_retry=self._on_retry,
            # The breaker opening ends a retry wait: the next attempt then fails at once.
            wake=None if self._breaker is None else self._breaker.down,
        )

    # -- STOW-RS ------------------------------------------------------------------------------

    def store(self, instance: Part10Instance) -> StowResult:
        """STOW-RS one instance to ``{root}/studies``, streaming it from disk.

        A "duplicate" answer (409, or the instance in FailedSOPSequence with 0x0111) after an
        earlier try of this store may have stored it - the transport sent the request again
        after writing it whole, or a retry followed a connection error or timeout - is checked
        with QIDO-RS (:func:`stored_after_conflict`): the instance found is Success, with the
        HTTP status as answered. A duplicate answer to a first, clean try stays 0x0111,
        without a check.

        Raises:
            DicomwebError: the request failed (after retries, for transient failures).
        """
        return self._stow([instance], f"STOW-RS of {instance.sop_instance_uid}")[0]

    def store_batch(self, instances: Sequence[Part10Instance]) -> list[StowResult]:
        """STOW-RS several instances in one multipart request to ``{root}/studies``.

        Each instance's status is read from the response (PS3.18 10.5.3: ReferencedSOPSequence,
        FailedSOPSequence), so one refused instance does not fail its neighbours. Duplicate
        answers are checked as in :meth:`store` (a 409 for the whole request: every instance).

        Raises:
            DicomwebError: the request failed as a whole (an HTTP error status, no answer):
                the response says nothing about single instances.
        """
        return self._stow(instances, f"STOW-RS of {len(instances)} instances")

    def _stow(self, instances: Sequence[Part10Instance], describe: str) -> list[StowResult]:
        """One STOW-RS request of ``instances`` (with retries); a result per instance."""
        url = self.address.url("studies")
        uids = [instance.sop_instance_uid for instance in instances]
        earlier_try_may_have_stored = False

        def attempt() -> list[StowResult]:
            nonlocal earlier_try_may_have_stored
            headers = {"Accept": DICOM_JSON}

            def body() -> Body:
                # A fresh body per request: a streamed body can be read only once.
                data, content_type = stow_body(instances)
                headers["Content-Type"] = content_type
                headers["Content-Length"] = str(len(data))
                return data

            try:
                response = self._send("POST", url, headers, body, transport=self._stow_transport)
            except DicomwebHttpError as exc:
                if (
                    exc.status == _HTTP_CONFLICT
                    and (earlier_try_may_have_stored or was_resent(exc))
                    and all(stored_after_conflict(self, uid) for uid in uids)
                ):
                    return [StowResult(SUCCESS, exc.status) for _ in uids]
                raise
            except (DicomwebConnectionError, DicomwebTimeoutError):
                # Unanswered: the store may have the instances now (a connection that failed
                # before the request went out counts too; a check costs one search, and only
                # after a later duplicate answer).
                earlier_try_may_have_stored = True
                raise
            statuses = stow_statuses(
                response.data, response.headers.get("Content-Type", ""), uids
            )
            may_be_ours = earlier_try_may_have_stored or was_resent(response)
            return [
                StowResult(
                    SUCCESS
                    if is_duplicate_store_status(status)
                    and may_be_ours
                    and stored_after_conflict(self, uid)
                    else status,
                    response.status,
                )
                for uid, status in zip(uids, statuses, strict=True)
            ]

        return self._with_retry(attempt, describe)

    # -- QIDO-RS ------------------------------------------------------------------------------

    def search(
        self, resource: Sequence[str], query: Query, *, page_size: int = 1000, parallel: int = 1
    ) -> Iterator[dict[str, Any]]:
        """QIDO-RS ``{root}/{resource}?query``, paging with ``limit``/``offset`` until done.

        Results are yielded in order as each page arrives. A server that ignores ``limit``
        (returns more than asked) is taken to have returned everything.

        Args:
            resource: the path below the root (``studies``, ``studies/{uid}/series``...).
            query: the search parameters, without ``limit``/``offset``.
            page_size: the ``limit`` of each page.
            parallel: pages requested at once. The first page is requested alone (with
                ``parallel`` > 1 it holds ``page_size // FIRST_PAGE_DIVISOR`` results, so it is
                back sooner), so a search that fits in it costs one request; once it comes
                back full, up to ``parallel`` further pages are in flight while results are
                consumed, and at most ``parallel - 1`` requests past the last page are wasted.
                A store that builds each result (Orthanc reads every study from disk) answers
                a large search up to ``parallel`` times sooner.
        """

        def page_at(offset: int, limit: int = page_size) -> list[dict[str, Any]]:
            page_query = [*query, ("limit", str(limit)), ("offset", str(offset))]
            url = self.address.url(*resource, query=page_query)
            return self._with_retry(partial(self._get_json, url), f"QIDO-RS {resource}")

        # In parallel mode the first page is smaller: it is fetched alone, so the sooner it
        # is back the sooner the parallel pages start (and the first responses go out).
        first = page_size if parallel <= 1 else max(1, page_size // FIRST_PAGE_DIVISOR)
        page = page_at(0, first)
        yield from page
        if len(page) != first:
            return
        yield from _pages_ahead(page_at, first, page_size, parallel)

    def _get_json(self, url: str) -> list[dict[str, Any]]:
        response = self._send("GET", url, {"Accept": DICOM_JSON})
        if response.status == 204:
            return []
        raw = response.data
        if not raw.strip():
            return []
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DicomwebResponseError(f"QIDO-RS response is not JSON: {exc}") from exc
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise DicomwebResponseError("QIDO-RS response is not a JSON array of datasets")
        return data

    # -- WADO-RS ------------------------------------------------------------------------------

    def retrieve(
        self, resource: Sequence[str], *, accept: str = ACCEPT_ANY_SYNTAX
    ) -> Iterator[Part]:
        """WADO-RS ``{root}/{resource}``, yielding parts as they stream in.

        Each part must be consumed before the next is requested. Connection errors before the
        first byte are retried; a failure mid-stream raises :class:`DicomwebError`.
        """
        url = self.address.url(*resource)
        response = self._with_retry(
            lambda: self._send("GET", url, {"Accept": accept}, stream=True),
            f"WADO-RS {resource}",
        )
        complete = False
        try:
            boundary = boundary_of(response.headers.get("Content-Type", ""))
            yield from iter_parts(_chunks(response), boundary)
            complete = True
        finally:
            if complete:
                response.release_conn()
            else:
                # Abandoned mid-body: the connection cannot be reused, close it.
                response.close()

    # -- DELETE -------------------------------------------------------------------------------

    def delete(self, resource: Sequence[str]) -> None:
        """DELETE ``{root}/{resource}`` (a study, series or instance)."""
        url = self.address.url(*resource)
        self._with_retry(
            lambda: self._send("DELETE", url, {"Accept": DICOM_JSON}).data,
            f"DELETE {resource}",
        )


def _chunks(response: Response) -> Iterator[bytes]:
    with translate_stream_errors(response.url or ""):
        yield from response.stream(_STREAM_CHUNK)


def _pages_ahead(
    page_at: Callable[[int], list[dict[str, Any]]], start: int, page_size: int, parallel: int
) -> Iterator[dict[str, Any]]:
    """The results from ``start`` on, ``parallel`` pages requested ahead, in order."""
    if parallel <= 1:  # one page after another, in the caller's thread
        offset = start
        while True:
            page = page_at(offset)
            yield from page
            if len(page) != page_size:
                return
            offset += page_size
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="qido-page")
    pending: deque[Future[list[dict[str, Any]]]] = deque()
    offset = start
    try:
        while True:
            while len(pending) < parallel:
                pending.append(pool.submit(page_at, offset))
                offset += page_size
            page = pending.popleft().result()
            yield from page
            if len(page) != page_size:
                return
    finally:
        # Pages past the end, or not wanted any more (C-CANCEL, association gone): requests
        # not started are dropped; one in flight ends on its own, its result unused.
        pool.shutdown(wait=False, cancel_futures=True)


def stored_after_conflict(api: DicomwebApi, sop_instance_uid: str) -> bool:
    """Whether the store has an instance it called a duplicate (checked after a 409).

    For a STOW-RS resent or retried after a try that may have stored the instance. QIDO-RS
    ``{root}/instances?SOPInstanceUID={uid}``: True when a result is that instance (logged at
    INFO); False when none is (a server that ignores the key lists others), or when the
    search fails (logged): the duplicate answer then stands.
    """
    try:
        results = api.search(
            ("instances",), [("SOPInstanceUID", sop_instance_uid)], page_size=_CHECK_RESULTS
        )
        found = False
        for index, result in enumerate(results, 1):
            element = result.get(_SOP_INSTANCE_UID)
            value = element.get("Value") if isinstance(element, dict) else None
            if isinstance(value, list) and value and str(value[0]) == sop_instance_uid:
                found = True
                break
            if index >= _CHECK_RESULTS:
                break  # not asking for more pages: the filter is not applied
    except AdapterError as exc:
        LOG.warning(
            "409 after a resend of %r: checking whether the store has it failed (%s); "
            "the conflict stands", sop_instance_uid, exc,
        )
        return False
    if found:
        LOG.info("409 after a resend: instance is in the store (SOP Instance UID %r)",
                 sop_instance_uid)
    else:
        LOG.info("409 after a resend of %r: the store does not list it; the conflict stands",
                 sop_instance_uid)
    return found
