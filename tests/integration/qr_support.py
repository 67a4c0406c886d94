"""Local helpers for the C-FIND/C-MOVE/C-GET integration tests (not a test module).

- :func:`start_adapter`: the import adapter in-process on a free port, in front of a DICOMweb
  store, with a small QIDO page size so that paging is always exercised.
- :class:`Pair`: two Orthancs loaded with the same files: ``backend`` (the adapter's DICOMweb
  store) and ``oracle`` (queried directly over DIMSE).
- :func:`find_matches`: run ``findscu -X`` and return the response identifiers.
- :func:`c_move`: a C-MOVE with pynetdicom, every response status dataset.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)

from common.auth import AuthConfig, AuthKind
from common.dicomweb.address import parse_dicomweb_address
from common.dimse.aet_dictionary import AetDictionary, parse_aet_dictionary
from common.retry import RetryPolicy
from import_adapter.app import ImportAdapter
from import_adapter.config import DimseServerConfig, ImportConfig
from import_adapter.query.service import QuerySettings
from import_adapter.retrieve.service import RetrieveSettings
from tests.support import dcmtk
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port

ADAPTER_AET = "QRADAPTER"
LOCALHOST = "127.0.0.1"


def aet_dictionary(entries: Iterable[tuple[str, str, int]]) -> AetDictionary:
    """An AET dictionary in the reference JSON format, parsed like the CLI does."""
    text = json.dumps([{"name": n, "host": h, "port": p} for n, h, p in entries])
    return parse_aet_dictionary(text, source="test")


def start_adapter(
    dicomweb_url: str,
    *,
    destinations: Iterable[tuple[str, str, int]] = (),
    page_size: int = 7,
    prefetch: int = 8,
    fuzzy: bool = False,
    retry_budget: float = 0.0,
    cmove_aet: str = "",
) -> ImportAdapter:
    """Start the import adapter (C-FIND/C-MOVE/C-GET enabled) and return it (call stop())."""
    config = ImportConfig(
        dimse=DimseServerConfig(ae_title=ADAPTER_AET, port=free_port(), bind_address=LOCALHOST),
        dicomweb=parse_dicomweb_address(dicomweb_url),
        auth=AuthConfig(kind=AuthKind.NONE),
        retry=RetryPolicy(budget=retry_budget),
        shutdown_grace=1.0,
        query=QuerySettings(retrieve_aet=ADAPTER_AET, page_size=page_size, fuzzy_matching=fuzzy),
        retrieve=RetrieveSettings(page_size=page_size, prefetch=prefetch,
                                  spool_dir=Path(tempfile.mkdtemp(prefix="qr-spool-")),
                                  calling_aet=cmove_aet),
        aet_dictionary=aet_dictionary(destinations),
    )
    adapter = ImportAdapter(config)
    adapter.start()
    return adapter


@dataclass
class Pair:
    """Two Orthancs with the same data: the adapter's backend and the DIMSE oracle."""

    backend: OrthancServer
    oracle: OrthancServer

    def load(self, paths: Sequence[Path]) -> None:
        """Store the same files in both."""
        for server in (self.backend, self.oracle):
            server.upload_all(paths)


def find_matches(
    port: int,
    keys: Sequence[str],
    out: Path,
    *,
    called_aet: str = ADAPTER_AET,
    model: dcmtk.QueryModel = "study",
    extra_args: Sequence[str] = (),
) -> tuple[list[pydicom.Dataset], Any]:
    """findscu with ``-X``: the response identifiers and the completed process."""
    out.mkdir(parents=True, exist_ok=True)
    result = dcmtk.findscu(LOCALHOST, port, keys, called_aet=called_aet, model=model,
                           output_dir=out, extra_args=extra_args)
    return dcmtk.read_responses(out), result


def c_move(port: int, keys: Dataset, destination: str, *,
          model: str = StudyRootQueryRetrieveInformationModelMove,
          cancel_after: int | None = None) -> list[Dataset]:
    """C-MOVE with pynetdicom; returns every response status dataset."""
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(model)
    assoc = ae.associate(LOCALHOST, port, ae_title=ADAPTER_AET)
    assert assoc.is_established
    try:
        return retrieve_statuses(
            assoc, assoc.send_c_move(keys, destination, model, msg_id=7), 7, model, cancel_after
        )
    finally:
        assoc.release()


def retrieve_statuses(
    assoc: Association,
    responses: Iterator[tuple[Dataset | None, Dataset | None]],
    message_id: int,
    model: str,
    cancel_after: int | None = None,
) -> list[Dataset]:
    """Every C-MOVE/C-GET response status (with its identifier merged in), in order.

    ``cancel_after``: send a C-CANCEL once that many responses have come.
    """
    statuses = []
    for index, (status, identifier) in enumerate(responses):
        if status is None:
            break
        if identifier is not None:
            status.update(identifier)
        statuses.append(status)
        if cancel_after is not None and index + 1 == cancel_after:
            assoc.send_c_cancel(message_id, query_model=model)
    return statuses


def study_keys(uid: str) -> Dataset:
    """C-MOVE/C-GET keys of one study."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds
