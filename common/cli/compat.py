"""Reference adapter flags whose job this adapter does differently.

Deployments migrating from Google's Java adapter keep their arguments; these flags are accepted
under their original spellings and either checked against what we support (a clear usage error
when the request cannot be honoured, never a silent ignore) or explained at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

from common.cli.options import option
from common.cli.params import AE_TITLE

F = TypeVar("F", bound=Callable[..., Any])
LOG = logging.getLogger(__name__)


def monitoring_option(func: F) -> F:
    """``--monitoring_project_id``: the reference adapter's Cloud Monitoring export."""
    return option(
        "monitoring_project_id",
        help="Reference adapter flag (Cloud Monitoring). Metrics are served in Prometheus "
        "format on --metrics_port instead; Google Cloud Managed Service for Prometheus "
        "brings them to Cloud Monitoring.",
    )(func)


def import_compat_options(func: F) -> F:
    """Reference import flags handled by :func:`check_import_compat`."""
    func = option(
        "gcs_backup_project_id",
        help="Reference adapter flag for a gs:// backup location; the spool here is a local "
        "directory (a PersistentVolume on GKE), so a gs:// location is refused.",
    )(func)
    func = option(
        "dimse_cmove_aet",
        type=AE_TITLE,
        help="Calling AE title of the associations C-MOVE opens to move destinations "
        "(default: --dimse_aet).",
    )(func)
    return monitoring_option(func)


def explain_monitoring(params: dict[str, Any]) -> None:
    """Log how metrics reach Cloud Monitoring when ``--monitoring_project_id`` was given."""
    if params.get("monitoring_project_id"):
        LOG.info(
            "--monitoring_project_id %s: metrics are exposed for Prometheus on --metrics_port; "
            "scrape them with Managed Service for Prometheus to see them in Cloud Monitoring",
            params["monitoring_project_id"],
        )


def check_import_compat(params: dict[str, Any]) -> None:
    """Refuse reference import flags whose request we cannot honour (before anything runs)."""
    location = str(params.get("persistent_file_storage_location") or "")
    if location.startswith("gs:/"):  # click's Path may have collapsed "gs://" already
        raise click.UsageError(
            "--persistent_file_storage_location must be a local directory (gs:// is not "
            "supported); on GKE mount a PersistentVolume, as the Helm chart does"
        )


def explain_import_compat(params: dict[str, Any]) -> None:
    """Log what the accepted-but-different reference import flags mean here."""
    if params.get("gcs_backup_project_id"):
        LOG.warning("--gcs_backup_project_id has no effect: the spool is a local directory")
    explain_monitoring(params)
