"""The study of each instance this process received: what lets commitment ask once per study.

A Storage Commitment request names SOP instances only (class and instance UID). The store can
list every instance of a study in one QIDO-RS request, so knowing the study of each instance
turns one lookup per instance (500 requests for a 500-image study, each a round trip to a far
store, each counted against its quota) into a few per study. The C-STORE path
(:class:`~import_adapter.store.StoreService`) records the Study Instance UID it read from each
dataset it received; :class:`~import_adapter.commitment.service.CommitmentService` reads it.

Bounded (the least recently recorded entries are forgotten first) and thread-safe. It holds
what *this process* received: an instance received by another replica, or before a restart, is
not known here, and commitment looks it up by itself as before. An entry is only a hint of
where to look: an instance missing from its study's listing is still looked up by itself
before it counts as missing, so a wrong or stale entry costs a request, never a verdict.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from common.dicom.reference import is_uid

#: Entries kept by default: about 22 MB (measured with 64-character UIDs), hours of images.
DEFAULT_CAPACITY = 100_000

class KnownStudies:
    """SOP Instance UID -> Study Instance UID of the instances received, the newest kept."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        """Keep at most ``capacity`` instances (the least recently recorded are forgotten)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._studies: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._last_study = ""

    def record(self, sop_instance_uid: str, study_instance_uid: str) -> None:
        """Remember the study of a received instance.

        A study UID that is not a well-formed UID (it came from a peer's dataset and would go
        into a URL path) is not recorded: that instance is looked up by itself.
        """
        if not sop_instance_uid or not is_uid(study_instance_uid):
            return
        with self._lock:
            # The instances of a study arrive together: they share one string for its UID.
            if study_instance_uid == self._last_study:
                study_instance_uid = self._last_study
            else:
                self._last_study = study_instance_uid
            self._studies[sop_instance_uid] = study_instance_uid
            self._studies.move_to_end(sop_instance_uid)
            if len(self._studies) > self._capacity:
                self._studies.popitem(last=False)

    def studies_of(self, sop_instance_uids: Iterable[str]) -> dict[str, str]:
        """The study of each of ``sop_instance_uids`` that is known (the others are left out)."""
        with self._lock:
            return {
                uid: study for uid in sop_instance_uids
                if (study := self._studies.get(uid)) is not None
            }  # fmt: skip

    def __len__(self) -> int:
        """How many instances are known."""
        with self._lock:
            return len(self._studies)
