"""Which association requests are admitted: the access policy and the association limits.

Applied once the request has passed the protocol's checks (called AE title, application
context, protocol version):

- a requester the access policy lets use no service at all: A-ASSOCIATE-RJ rejected-permanent,
  service user, calling AE title not recognized;
- over ``--max_associations_per_aet`` associations open for its calling AE title, or over
  ``--max_associations`` in total: rejected-transient, service provider (presentation), local
  limit exceeded;
- otherwise accepted, minus the SOP classes a service refuses at negotiation to requesters the
  policy denies it (C-MOVE, :attr:`import_adapter.dimse_service.DimseService.deny_at_negotiation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from common.dimse.fast.acse import AssociateRequest
from common.dimse.fast.constants import RejectReason, RejectResult, RejectSource
from common.dimse.fast.scp import AcceptorAssociation, Admission
from import_adapter.access import AccessPolicy, Requester
from import_adapter.dimse_service import DimseService

_NOT_RECOGNIZED = Admission(
    (RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLING_AE_NOT_RECOGNIZED)
)
_OVER_LIMIT = Admission(
    (
        RejectResult.TRANSIENT,
        RejectSource.SERVICE_PROVIDER_PRESENTATION,
        RejectReason.LOCAL_LIMIT_EXCEEDED,
    )
)


class AdmissionControl:
    """Admits association requests (see the module docstring).

    Args:
        services: the listener's services (for what they refuse at negotiation).
        access: the access policy.
        established: the associations established now.
        max_associations: the most at once.
        max_associations_per_aet: the most at once per calling AE title (0: no limit).
    """

    def __init__(
        self,
        services: Sequence[DimseService],
        access: AccessPolicy,
        established: Callable[[], list[AcceptorAssociation]],
        *,
        max_associations: int,
        max_associations_per_aet: int = 0,
    ) -> None:
        self._services = services
        self._access = access
        self._established = established
        self._max = max_associations
        self._per_aet = max_associations_per_aet

    def admit(self, assoc: AcceptorAssociation, request: AssociateRequest) -> Admission:
        """The verdict on ``request``, which ``assoc`` received."""
        requester = Requester.of(request.calling_ae_title, assoc.requestor.address)
        calling = requester.calling_aet
        if not self._access.allows_any(requester):
            return _NOT_RECOGNIZED
        established = self._established()
        if self._per_aet and sum(
            1 for other in established if other.requestor.ae_title.strip() == calling
        ) >= self._per_aet:
            return _OVER_LIMIT
        if len(established) >= self._max:
            return _OVER_LIMIT
        refused: frozenset[str] = frozenset()
        for service in self._services:
            if (
                service.access is not None
                and service.deny_at_negotiation
                and not self._access.allows(service.access, requester)
            ):
                refused |= service.deny_at_negotiation
        return Admission(refused=refused)
