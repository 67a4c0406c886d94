"""What an acceptor answers to an A-ASSOCIATE-RQ: contexts, roles, user identity, async window.

Pure: :func:`negotiate` takes the decoded request and what the SCP serves, and returns the
A-ASSOCIATE-AC's content. The rules (documented for users in docs/conformance.md):

- presentation contexts: a served SOP class (Q/R, Storage Commitment...) in the first proposed
  transfer syntax it supports; Verification in the first syntax pynetdicom knows; any other
  storage-like class (storage, private, unknown) in the requestor's first choice, never a
  transcode (where the requestor takes the SCP role, for a C-GET, we send: explicit VR big
  endian, which we do not convert to, only when nothing else is proposed); anything else is
  refused (abstract syntax not supported); a class refused to this requester by policy is
  refused (user rejection);
- SCP/SCU role selection (PS3.7 D.3.3.4): the SCU role is granted as proposed; the SCP role
  only for storage-like classes (the C-STORE sub-operations of a C-GET travel to the
  requestor on those contexts); a context left with neither role is refused; classes proposed
  without a role item keep the default roles and get no reply;
- user identity (PS3.7 D.3.3.7): accepted, never checked (access is decided by AE title and
  network); when a positive response is requested for a username (and passcode) identity,
  the A-ASSOCIATE-AC carries a User Identity sub-item with an empty server response (the
  standard's answer for those types); for Kerberos, SAML and JWT identities there is no
  server token to return, so none is sent;
- asynchronous operations window (PS3.7 D.3.3.3): answered 1/1, what we do (one operation
  at a time per association);
- SOP class (common) extended negotiation: not answered; none of the optional behaviours is
  offered, which an absent reply means (PS3.7 D.3.3.5).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import pynetdicom.sop_class as sop_classes
from pydicom.uid import UID, ExplicitVRBigEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.service_class import StorageServiceClass

from common.dimse.fast.acse import AcceptedContext, AssociateRequest, NegotiationReplies
from common.dimse.fast.constants import (
    APPLICATION_CONTEXT_NAME,
    VERIFICATION_SOP_CLASS,
    ContextResult,
)

#: User identity types whose positive response is an empty server response (PS3.7 D.3.3.7.2).
_EMPTY_RESPONSE_IDENTITIES = frozenset({1, 2})
#: The asynchronous operations window we answer: one invoked, one performed at a time.
ASYNC_WINDOW = (1, 1)


def is_storage_like(abstract_syntax: str) -> bool:
    """Whether the class is accepted as storage: private, unknown, or a storage SOP class.

    The same test as ``pynetdicom.presentation.negotiate_unrestricted``.
    """
    uid = UID(abstract_syntax)
    if uid.is_private or not hasattr(sop_classes, uid.keyword):
        return True
    return sop_classes.uid_to_service_class(uid) is StorageServiceClass


@dataclass(frozen=True)
class Negotiated:
    """The answer to an association request.

    Attributes:
        results: ``(context ID, result, transfer syntax)`` per proposed context.
        contexts: the accepted contexts, by ID.
        replies: the role, user identity and window sub-items to answer with.
        requestor_scp: the SOP classes for which the requestor took the SCP role (C-GET
            sub-operations may be sent on their contexts).
    """

    results: tuple[tuple[int, int, str], ...]
    contexts: Mapping[int, AcceptedContext]
    replies: NegotiationReplies
    requestor_scp: frozenset[str]


def _choose(
    abstract_syntax: str,
    proposed: tuple[str, ...],
    served: Mapping[str, tuple[str, ...]],
    sending: bool = False,
) -> tuple[int, str | None]:
    """The result and transfer syntax for one proposed context.

    ``sending``: the requestor took the SCP role for the class (a C-GET's destination): we send
    on this context, converting where needed, and explicit VR big endian (retired) is one we do
    not convert to, so it is taken only when nothing else was proposed.
    """
    if sending and len(proposed) > 1:
        proposed = tuple(ts for ts in proposed if ts != ExplicitVRBigEndian) or proposed
    supported = served.get(abstract_syntax)
    if supported is not None:
        syntax = next((ts for ts in proposed if ts in supported), None)
    elif abstract_syntax == VERIFICATION_SOP_CLASS:
        syntax = next((ts for ts in proposed if ts in ALL_TRANSFER_SYNTAXES), None)
    elif is_storage_like(abstract_syntax):
        syntax = proposed[0] if proposed else None  # the SCU's first choice, never a transcode
    else:
        return ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, None
    if syntax is None:
        return ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, None
    return ContextResult.ACCEPTANCE, syntax


def negotiate(
    request: AssociateRequest,
    served: Mapping[str, tuple[str, ...]],
    refused: Collection[str] = (),
) -> Negotiated:
    """Answer ``request``.

    Args:
        request: the decoded A-ASSOCIATE-RQ.
        served: transfer syntaxes accepted per non-storage SOP class served (in order of
            preference only where the requestor proposes several).
        refused: SOP classes refused to this requester (user rejection).
    """
    roles: list[tuple[str, bool, bool]] = []
    requestor_scp: set[str] = set()
    role_ok: dict[str, bool] = {}
    for sop_class, proposal in request.roles.items():
        scp = proposal.scp and is_storage_like(sop_class)
        role_ok[sop_class] = proposal.scu or scp
        if proposal.scu or scp:
            roles.append((sop_class, proposal.scu, scp))
            if scp:
                requestor_scp.add(sop_class)
    results: list[tuple[int, int, str]] = []
    contexts: dict[int, AcceptedContext] = {}
    answered: set[str] = set()
    for cx in request.contexts:
        if cx.abstract_syntax in refused or not role_ok.get(cx.abstract_syntax, True):
            result: int = ContextResult.USER_REJECTION
            syntax: str | None = None
        else:
            result, syntax = _choose(
                cx.abstract_syntax, cx.transfer_syntaxes, served,
                sending=cx.abstract_syntax in requestor_scp,
            )  # fmt: skip
        if syntax is None:
            # PS3.8 9.3.3.2: the transfer syntax of a refused context is not significant.
            fallback = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else APPLICATION_CONTEXT_NAME
            results.append((cx.context_id, result, fallback))
            continue
        results.append((cx.context_id, ContextResult.ACCEPTANCE, syntax))
        contexts[cx.context_id] = AcceptedContext(cx.context_id, cx.abstract_syntax, syntax)
        answered.add(cx.abstract_syntax)
    identity = request.user_identity
    return Negotiated(
        results=tuple(results),
        contexts=contexts,
        replies=NegotiationReplies(
            # Only for classes with an accepted context (PS3.7 D.3.3.4).
            roles=tuple(role for role in roles if role[0] in answered),
            user_identity_response=(
                b""
                if identity is not None
                and identity.response_requested
                and identity.identity_type in _EMPTY_RESPONSE_IDENTITIES
                else None
            ),
            async_window=ASYNC_WINDOW if request.async_window is not None else None,
        ),
        requestor_scp=frozenset(requestor_scp & answered),
    )
