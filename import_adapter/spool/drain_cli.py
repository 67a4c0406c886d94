"""``dicom-adapter spool drain``: upload what a spool holds, without the adapter, and exit.

For a spool whose adapter is gone for good (a StatefulSet scaled down leaves its
PersistentVolumeClaim behind): a Job mounting the volume runs this once. It is the adapter's
own upload path (:class:`~import_adapter.spool.manager.SpoolManager` with the same uploaders,
retries and dead-lettering), minus the DIMSE listener: recover the spool, upload every queue
(each queue folder names its destination, so routed destinations are served too), stop when the
queues are empty or ``--timeout`` is up. Exit status 0 when nothing is left to upload (dead
letters are not retried: ``dicom-adapter dead-letter``), 1 with a one-line summary when some
is; the spool's lock keeps it off a spool an adapter still serves (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from common.cli.options import auth_config, auth_options, option, proxy_settings
from common.cli.params import AE_TITLE, DICOMWEB_ADDRESS
from common.http import HttpSettings, HttpTransport
from common.logs import configure_logging
from import_adapter.routing.destinations import Destination, DicomwebDestination
from import_adapter.spool.cli import dead_letters
from import_adapter.spool.disk import SpoolLimits
from import_adapter.spool.layout import SpoolLayout
from import_adapter.spool.manager import SpoolManager, SpoolSettings
from import_adapter.spool.options import upload_options, upload_settings
from import_adapter.spool.wiring import uploader_factory


@click.group(name="spool", context_settings={"max_content_width": 100})
def command() -> None:
    """The import adapter's durable spool, without the adapter."""


@command.command(name="drain")
@option("persistent_file_storage_location", type=click.Path(file_okay=False, path_type=Path),
        required=True, help="The spool folder (no adapter may be serving it).")
@option("dicomweb_address", type=DICOMWEB_ADDRESS,
        help="A DICOMweb root to serve as well; not needed otherwise: each queue folder "
             "names its destination (the adapter's --dicomweb_address or a routed one).")
@auth_options
@upload_options
@option("dimse_aet", type=AE_TITLE, default="IMPORTADAPTER", show_default=True,
        help="Our AE title on C-STOREs to DIMSE destinations.")
@option("http_timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
        help="Seconds to wait for a DICOMweb server's response.")
@click.option("--timeout", type=click.FloatRange(0.1), default=600.0, show_default=True,
              help="Seconds to keep uploading; then what is left stays in the spool (exit 1).")
@option("verbose", is_flag=True, default=False, help="Debug logging.")
@option("log_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
        help="Log line format.")
def drain_command(**params: Any) -> int:
    """Upload everything queued in a spool, then exit (0: nothing left, 1: some left)."""
    location: Path = params["persistent_file_storage_location"]
    if not location.is_dir():
        raise click.BadParameter(
            f"{location} is not a spool folder", param_hint="--persistent_file_storage_location"
        )
    configure_logging(verbose=params["verbose"], json_format=params["log_format"] == "json")
    upload = upload_settings(params)
    proxy = proxy_settings()
    transport = HttpTransport(
        HttpSettings(
            read_timeout=params["http_timeout"],
            pool_size=max(8, upload.concurrency.cap),
            ca_bundle=params["ca_bundle"],
            proxy=proxy,
        )
    )
    destinations: list[Destination] = []
    if params["dicomweb_address"] is not None:
        destinations.append(DicomwebDestination(params["dicomweb_address"]))
    factory = uploader_factory(
        upload=upload,
        auth=auth_config(params, proxy),
        transport=transport,
        stow_transport=None,
        calling_aet=params["dimse_aet"],
        max_pdu_size=1 << 20,
    )
    settings = SpoolSettings(
        directory=location, auto_ack=True, limits=SpoolLimits(min_free_bytes=0), upload=upload
    )
    manager = SpoolManager(settings, destinations, factory)
    try:
        manager.start()
        manager.drain(params["timeout"])
    finally:
        left = manager.stop()
        transport.close()
    dead = len(dead_letters(SpoolLayout(location)))
    note = f"; {dead} in dead-letter (dicom-adapter dead-letter list)" if dead else ""
    if not left:
        click.echo(f"spool drain: nothing left to upload in {location}{note}", err=True)
        return 0
    counts = ", ".join(f"{where}: {count}" for where, count in left.items())
    click.echo(
        f"spool drain: {sum(left.values())} uploads left in {location} after "
        f"{params['timeout']:g} s ({counts}){note}",
        err=True,
    )
    return 1
