"""De-identification and in-transit transcoding of received instances, as a sink decorator.

:class:`TransformingSink` wraps the sink that stores instances (STOW-RS, or a spool/router) and
hands it the transformed instance instead of the received one::

    received (spooled) --redact--> file next to it --transcode--> file next to it --> inner sink

Redaction streams the pixel data from file to file (constant memory); transcoding loads one
instance. Both write into the spool directory, and the files are deleted once the inner sink
returned, if still there: an inner sink that keeps instances takes the file over (the spool
renames it) or copies it during ``deliver``.

An instance that cannot be transcoded is stored unchanged and answered with the warning
:data:`common.status.TRANSCODE_FALLBACK_WARNING` (unless ``strict``: then the C-STORE fails with
0xC000). The warning survives whatever success or warning the inner sink answers; a failure from
the inner sink wins.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pydicom.uid import UID

from common.dicom.deidentify import RedactionConfig, Redactor
from common.dicom.part10 import Part10Instance
from common.dicom.transcode import TARGET_SYNTAXES, TranscodeSettings, transcode_instance
from common.errors import TranscodeError
from common.sinks import InstanceSink, Origin
from common.status import DimseStatus, transcode_fallback_status

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransformConfig:
    """What happens to received instances before they are stored.

    Attributes:
        redaction: the de-identification policy (None: instances are not de-identified).
        transcode: the transfer syntax to store in (None: instances keep theirs).
    """

    redaction: RedactionConfig | None = None
    transcode: TranscodeSettings | None = None

    @property
    def enabled(self) -> bool:
        """Whether any transformation is configured."""
        return self.redaction is not None or self.transcode is not None


def combine(own: DimseStatus | None, inner: DimseStatus) -> DimseStatus:
    """The C-STORE status from our own warning (if any) and the inner sink's status.

    A failure of the inner sink wins; otherwise our warning is answered, so an SCU learns that
    the instance was stored untranscoded even when the store itself warned about something else.
    """
    if own is None or inner.is_failure:
        return inner
    if inner.is_warning and inner.comment:
        return DimseStatus(own.code, f"{own.comment}; store: {inner.comment}")
    return own


class TransformingSink:
    """An :class:`~common.sinks.InstanceSink` that redacts and/or transcodes first."""

    def __init__(
        self,
        inner: InstanceSink,
        config: TransformConfig,
        *,
        work_dir: Path | None = None,
    ) -> None:
        """Wrap ``inner``; temporary files go to ``work_dir`` (default: next to each spool file)."""
        self._inner = inner
        self._redactor = Redactor(config.redaction) if config.redaction is not None else None
        self._transcode = config.transcode
        self._work_dir = work_dir

    @contextmanager
    def _scratch(self, near: Path, suffix: str) -> Iterator[Path]:
        folder = self._work_dir or near.parent
        handle, name = tempfile.mkstemp(prefix="transform-", suffix=suffix, dir=folder)
        os.close(handle)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def describe(self) -> str:
        """The inner sink, after the transformation."""
        return f"transformed, then {self._inner.describe()}"

    def close(self) -> None:
        """Close the inner sink."""
        self._inner.close()

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        """Transform ``instance``, deliver it to the inner sink and combine the statuses.

        The inner sink gets the transformed file as the origin's file (it may take it over).

        Raises:
            MalformedDatasetError: the dataset cannot be parsed for redaction.
            TranscodeError: transcoding failed and the settings are strict.
            AdapterError: whatever the inner sink raises.
        """
        with (
            self._scratch(instance.dataset_path, ".redacted") as redacted_path,
            self._scratch(instance.dataset_path, ".transcoded") as transcoded_path,
        ):
            current = instance
            if self._redactor is not None:
                current = self._redactor.redact_instance(
                    current, redacted_path, source_aet=origin.source_aet
                )
                LOG.debug("de-identified as sop_instance=%s", current.sop_instance_uid)
            warning: DimseStatus | None = None
            if self._transcode is not None:
                current, warning = self._transcoded(current, transcoded_path, origin)
            if current is not instance:
                origin = Origin(origin.source_aet, current.dataset_path)
                # The study it was received in: what the spool batches STOW-RS requests by.
                current = replace(current, study_instance_uid=instance.study_instance_uid)
            return combine(warning, self._inner.deliver(current, origin))

    def _transcoded(
        self, instance: Part10Instance, destination: Path, origin: Origin
    ) -> tuple[Part10Instance, DimseStatus | None]:
        settings = self._transcode
        assert settings is not None
        try:
            return (
                transcode_instance(
                    instance, settings, destination, source_aet=origin.source_aet
                ),
                None,
            )
        except TranscodeError as exc:
            if settings.strict:
                raise
            name = TARGET_SYNTAXES.get(settings.target) or UID(settings.target).name
            # The UID logged is the one being stored (the new one when de-identifying).
            LOG.warning(
                "sop_instance=%s stored in %s, not transcoded to %s: %s",
                instance.sop_instance_uid,
                UID(instance.transfer_syntax_uid).name or instance.transfer_syntax_uid,
                name,
                exc,
            )
            return instance, transcode_fallback_status(exc, name)
