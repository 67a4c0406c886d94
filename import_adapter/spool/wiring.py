"""Building the spool, router and uploaders from the import adapter's configuration."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from common.auth import AuthConfig, build_authenticator
from common.breaker import BreakerRegistry
from common.dicomweb.address import DicomwebAddress
from common.dicomweb.client import DicomwebClient
from common.dimse.sender import SenderSettings
from common.http import Transport
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.retry import NO_RETRY
from import_adapter.routing.destinations import (
    Destination,
    DicomwebDestination,
    DimseDestination,
)
from import_adapter.routing.router import Router, RoutingConfig
from import_adapter.spool.manager import SpoolManager, SpoolSettings, UploaderFactory
from import_adapter.spool.queue import UploadSettings
from import_adapter.spool.sink import SpoolingSink
from import_adapter.spool.uploaders import (
    CStoreUploader,
    StowUploader,
    UnconfirmedStores,
    Uploader,
)

LOG = logging.getLogger(__name__)


@dataclass
class Spooling:
    """The spool's parts, as the adapter holds them."""

    manager: SpoolManager
    sink: SpoolingSink
    router: Router


def uploader_factory(
    *,
    upload: UploadSettings,
    auth: AuthConfig,
    transport: Transport,
    stow_transport: Transport | None,
    calling_aet: str,
    max_pdu_size: int,
    breakers: BreakerRegistry | None = None,
) -> UploaderFactory:
    """The uploaders of each destination: STOW-RS (one client per root) or C-STORE.

    The one upload path, shared by the adapter and ``dicom-adapter spool drain``.
    """
    clients: dict[str, DicomwebClient] = {}
    sender_settings = SenderSettings(calling_aet=calling_aet, max_pdu_size=max_pdu_size)

    def factory(destination: Destination) -> Callable[[], Uploader]:
        if isinstance(destination, DimseDestination):
            return lambda: CStoreUploader(destination, sender_settings)
        client = clients.get(destination.key)
        if client is None:
            client = DicomwebClient(
                destination.address,
                transport,
                build_authenticator(auth, destination.address.root),
                NO_RETRY,  # the queue retries, with its own backoff
                stow_transport=stow_transport,
                breakers=breakers,
            )
            clients[destination.key] = client
        # The destination's uploaders share what they know of unanswered uploads.
        stow, unconfirmed = client, UnconfirmedStores()
        return lambda: StowUploader(
            stow,
            overwrite=upload.overwrite,
            retry_codes=upload.retry_codes,
            unconfirmed=unconfirmed,
        )

    return factory


def build_spooling(
    *,
    settings: SpoolSettings | None,
    routing: RoutingConfig,
    default: DicomwebAddress,
    auth: AuthConfig,
    transport: Transport,
    stow_transport: Transport | None,
    calling_aet: str,
    max_pdu_size: int,
    observer: ImportObserver = NULL_IMPORT_OBSERVER,
    breakers: BreakerRegistry | None = None,
) -> Spooling | None:
    """The spool and router, or None when neither a spool nor routing rules are configured.

    Routing rules without ``--persistent_file_storage_location`` still go through a spool (in
    a fresh temporary folder): each destination needs its own queue. ``breakers``: the
    process's circuit breakers, shared by the DICOMweb destinations' clients (a destination
    known down fails its uploads at once) and read by the sink (without auto-ack, a C-STORE
    routed to a store known down is refused before it is spooled).
    """
    if settings is None and not routing.rules:
        return None
    if settings is None:
        folder = Path(tempfile.mkdtemp(prefix="dicom-adapter-spool-"))
        LOG.warning("no --persistent_file_storage_location: spooling in %s (not kept)", folder)
        settings = SpoolSettings(directory=folder)
    router = Router(replace(routing, default=routing.default or DicomwebDestination(default)))
    factory = uploader_factory(
        upload=settings.upload,
        auth=auth,
        transport=transport,
        stow_transport=stow_transport,
        calling_aet=calling_aet,
        max_pdu_size=max_pdu_size,
        breakers=breakers,
    )
    manager = SpoolManager(settings, router.destinations, factory, observer)
    return Spooling(manager, SpoolingSink(manager, router, breakers), router)
