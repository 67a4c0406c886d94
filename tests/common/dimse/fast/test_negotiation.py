"""What the SCP answers to an association request: contexts, roles, user identity, window."""

from __future__ import annotations

from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from common.dimse.fast.acse import (
    AssociateRequest,
    NegotiationReplies,
    ProposedContext,
    RoleProposal,
    UserIdentityProposal,
)
from common.dimse.fast.constants import ContextResult
from common.dimse.fast.negotiation import is_storage_like, negotiate

CT = str(CTImageStorage)
FIND = str(StudyRootQueryRetrieveInformationModelFind)
GET = str(StudyRootQueryRetrieveInformationModelGet)
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG = "1.2.840.10008.1.2.4.50"
SERVED = {FIND: (EXPLICIT, IMPLICIT), GET: (EXPLICIT, IMPLICIT)}


def _request(*contexts: ProposedContext, **kwargs: object) -> AssociateRequest:
    return AssociateRequest(
        calling_ae_title="SCU",
        called_ae_title="SCP",
        application_context_name="1.2.840.10008.3.1.1.1",
        protocol_version=1,
        contexts=contexts,
        max_length=16384,
        **kwargs,  # type: ignore[arg-type]
    )


def test_contexts_served_storage_verification_and_the_rest() -> None:
    answer = negotiate(
        _request(
            ProposedContext(1, FIND, (JPEG, IMPLICIT, EXPLICIT)),
            ProposedContext(3, CT, (JPEG, EXPLICIT)),
            ProposedContext(5, str(Verification), (IMPLICIT,)),
            ProposedContext(7, str(PatientRootQueryRetrieveInformationModelFind), (IMPLICIT,)),
            ProposedContext(9, FIND, (JPEG,)),
            ProposedContext(11, "1.3.6.1.4.1.99999.1", (EXPLICIT,)),
        ),
        SERVED,
    )
    assert [(cx_id, result) for cx_id, result, _ in answer.results] == [
        (1, ContextResult.ACCEPTANCE),
        (3, ContextResult.ACCEPTANCE),
        (5, ContextResult.ACCEPTANCE),
        (7, ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED),
        (9, ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (11, ContextResult.ACCEPTANCE),
    ]
    assert answer.contexts[1].transfer_syntax == IMPLICIT  # first proposed that is served
    assert answer.contexts[3].transfer_syntax == JPEG  # storage: the SCU's first choice
    assert answer.replies == NegotiationReplies()  # nothing asked, nothing answered


def test_policy_refusal_is_a_user_rejection() -> None:
    answer = negotiate(_request(ProposedContext(1, GET, (EXPLICIT,))), SERVED, refused={GET})
    assert answer.results[0][1] == ContextResult.USER_REJECTION
    assert not answer.contexts


def test_roles_scp_only_for_storage_and_scu_as_proposed() -> None:
    answer = negotiate(
        _request(
            ProposedContext(1, GET, (EXPLICIT,)),
            ProposedContext(3, CT, (EXPLICIT,)),
            ProposedContext(5, FIND, (EXPLICIT,)),
            roles={
                CT: RoleProposal(scu=False, scp=True),
                FIND: RoleProposal(scu=True, scp=True),
                "1.2.3.999": RoleProposal(scu=True, scp=True),  # no context: no reply
            },
        ),
        SERVED,
    )
    assert answer.replies.roles == ((CT, False, True), (FIND, True, False))
    assert answer.requestor_scp == frozenset({CT})
    assert len(answer.contexts) == 3


def test_a_c_get_destination_context_avoids_big_endian_we_cannot_send() -> None:
    big = "1.2.840.10008.1.2.2"
    answer = negotiate(
        _request(
            ProposedContext(1, GET, (EXPLICIT,)),
            ProposedContext(3, CT, (big, EXPLICIT)),
            ProposedContext(5, CT, (big,)),
            ProposedContext(7, "1.2.840.10008.5.1.4.1.1.2.1", (big, EXPLICIT)),
            roles={CT: RoleProposal(scu=False, scp=True)},
        ),
        SERVED,
    )
    assert answer.contexts[3].transfer_syntax == EXPLICIT  # we send on it: not big endian
    assert answer.contexts[5].transfer_syntax == big  # nothing else was proposed
    assert answer.contexts[7].transfer_syntax == big  # we receive on it: the SCU's first choice


def test_a_context_left_without_a_role_is_refused() -> None:
    answer = negotiate(
        _request(
            ProposedContext(1, FIND, (EXPLICIT,)),
            roles={FIND: RoleProposal(scu=False, scp=True)},
        ),
        SERVED,
    )
    assert answer.results[0][1] == ContextResult.USER_REJECTION
    assert answer.replies.roles == ()


def test_user_identity_and_async_window() -> None:
    asked = negotiate(
        _request(
            ProposedContext(1, CT, (EXPLICIT,)),
            user_identity=UserIdentityProposal(2, response_requested=True),
            async_window=(5, 3),
        ),
        SERVED,
    )
    assert asked.replies.user_identity_response == b""
    assert asked.replies.async_window == (1, 1)
    quiet = negotiate(
        _request(
            ProposedContext(1, CT, (EXPLICIT,)),
            user_identity=UserIdentityProposal(1, response_requested=False),
        ),
        SERVED,
    )
    assert quiet.replies.user_identity_response is None
    jwt = negotiate(
        _request(
            ProposedContext(1, CT, (EXPLICIT,)),
            user_identity=UserIdentityProposal(5, response_requested=True),
        ),
        SERVED,
    )
    assert jwt.replies.user_identity_response is None  # no server token to give


def test_storage_like() -> None:
    assert is_storage_like("1.3.6.1.4.1.99999.1")
    assert is_storage_like(CT)
    assert not is_storage_like(FIND)
