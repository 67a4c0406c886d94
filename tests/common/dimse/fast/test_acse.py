"""The canonical A-ASSOCIATE-RQ: NUL-padded AE titles, explicit VR preferred, hostile titles."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from common.dimse.fast.acse import (
    ProposedContext,
    canonical_associate_rq,
    decode_associate_rq,
    encode_associate_rq,
    prefer_explicit_vr,
)
from common.dimse.fast.constants import AbortReason
from common.dimse.fast.transport import DimseProtocolError

CT = "1.2.840.10008.5.1.4.1.1.2"
PRIVATE_SYNTAX = "1.2.826.0.1.3680043.9.9999.1"
IMPLICIT, EXPLICIT = str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    ("proposed", "preferred"),
    [
        ((IMPLICIT, EXPLICIT), (EXPLICIT, IMPLICIT)),
        ((IMPLICIT, JPEGBaseline8Bit, EXPLICIT, RLELossless),
         (EXPLICIT, IMPLICIT, JPEGBaseline8Bit, RLELossless)),
        ((EXPLICIT, IMPLICIT), (EXPLICIT, IMPLICIT)),
        ((IMPLICIT,), (IMPLICIT,)),
        ((IMPLICIT, ExplicitVRBigEndian), (IMPLICIT, ExplicitVRBigEndian)),
        # The requestor's first choice is another syntax: its order is kept.
        ((JPEGBaseline8Bit, IMPLICIT, EXPLICIT), (JPEGBaseline8Bit, IMPLICIT, EXPLICIT)),
        ((RLELossless, EXPLICIT, IMPLICIT), (RLELossless, EXPLICIT, IMPLICIT)),
        ((DeflatedExplicitVRLittleEndian, IMPLICIT, EXPLICIT),
         (DeflatedExplicitVRLittleEndian, IMPLICIT, EXPLICIT)),
        ((ExplicitVRBigEndian, IMPLICIT, EXPLICIT), (ExplicitVRBigEndian, IMPLICIT, EXPLICIT)),
        ((PRIVATE_SYNTAX, IMPLICIT, EXPLICIT), (PRIVATE_SYNTAX, IMPLICIT, EXPLICIT)),
        ((), ()),
    ],
)
def test_prefer_explicit_vr(proposed: tuple[str, ...], preferred: tuple[str, ...]) -> None:
    assert prefer_explicit_vr(proposed) == preferred


def _rq(*contexts: tuple[str, ...], calling: str = "CALLER", called: str = "IMPORTADAPTER") -> bytes:
    return encode_associate_rq(
        calling, called,
        [ProposedContext(2 * i + 1, CT, syntaxes) for i, syntaxes in enumerate(contexts)],
        16384,
    )


def _with_titles(pdu: bytes, called: bytes, calling: bytes = b"CALLER          ") -> bytes:
    assert len(called) == len(calling) == 16
    return pdu[:10] + called + calling + pdu[42:]


def test_canonical_request_reorders_each_context_and_keeps_the_length() -> None:
    pdu = _rq((IMPLICIT, JPEGBaseline8Bit, EXPLICIT), (JPEGBaseline8Bit, IMPLICIT, EXPLICIT),
              (IMPLICIT,))
    canonical = canonical_associate_rq(pdu)
    assert len(canonical) == len(pdu)
    assert canonical_associate_rq(canonical) == canonical
    request = decode_associate_rq(pdu)
    assert [cx.transfer_syntaxes for cx in request.contexts] == [
        (EXPLICIT, IMPLICIT, JPEGBaseline8Bit),
        (JPEGBaseline8Bit, IMPLICIT, EXPLICIT),
        (IMPLICIT,),
    ]
    assert [cx.abstract_syntax for cx in request.contexts] == [CT, CT, CT]


def test_an_already_preferred_request_is_unchanged() -> None:
    pdu = _rq((EXPLICIT, IMPLICIT), (JPEGBaseline8Bit,))
    assert canonical_associate_rq(pdu) == pdu


def test_a_request_it_cannot_walk_is_left_for_the_decoder() -> None:
    pdu = _rq((IMPLICIT, EXPLICIT))
    context = pdu.index(b"\x20\x00", 74)
    explicit_item = pdu.index(EXPLICIT.encode()) - 4
    broken = [
        b"",
        pdu[:50],
        pdu[: context + 20],  # inside the presentation context item
        pdu[:context] + b"\x20\x00\xff\xff" + pdu[context + 4 :],  # longer than the PDU
        # a transfer syntax sub-item longer than its context item
        pdu[:explicit_item] + b"\x40\x00\x00\xff" + pdu[explicit_item + 4 :],
    ]
    for data in broken:
        assert canonical_associate_rq(data)[42:] == data[42:]


@pytest.mark.parametrize(
    "called", [b"IMPORTADAPTER\0\0\0", b"IMPORTADAPTER\0 \0", b"IMPORTADAPTER   "]
)
def test_nul_padded_titles_are_read_as_the_titles_they_spell(called: bytes) -> None:
    pdu = _with_titles(_rq((EXPLICIT,)), called, b"PYNETDICOM2\0\0\0\0\0")
    request = decode_associate_rq(pdu)
    assert (request.called_ae_title, request.calling_ae_title) == ("IMPORTADAPTER", "PYNETDICOM2")
    assert canonical_associate_rq(pdu)[10:42] == b"IMPORTADAPTER   PYNETDICOM2     "


@pytest.mark.parametrize(
    ("called", "calling", "which"),
    [
        (b"A\nFORGED LINE   ", b"CALLER          ", "called"),
        (b"IMPORTADAPTER\r\n ", b"CALLER          ", "called"),
        (b"IMPORT\0ADAPTER  ", b"CALLER          ", "called"),
        (b"                ", b"CALLER          ", "called"),
        (b"IMPORTADAPTER   ", b"\x1b[2J\x00EVIL\x7f\x85     ", "calling"),
        (b"IMPORTADAPTER   ", b"\0" * 16, "calling"),
    ],
)
def test_titles_that_spell_no_title_are_refused_escaped(
    called: bytes, calling: bytes, which: str
) -> None:
    with pytest.raises(DimseProtocolError) as caught:
        decode_associate_rq(_with_titles(_rq((EXPLICIT,)), called, calling))
    assert caught.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    message = str(caught.value)
    assert message.startswith(f"{which} AE title b'")
    assert message.isprintable()
